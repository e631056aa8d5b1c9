"""Decoder: embedding -> text, by nearest neighbour over a phrase bank of answers.

The cube outputs an embedding in the teacher's space; the decoder returns the bank phrases whose
teacher embeddings have the highest cosine similarity to it. The bank is the run's answer texts
or a user file (``.txt``: one phrase per line; any data file :func:`cellcube.data.read_path`
reads: the answers of its pairs).

**Stored banks.** :func:`stored_bank` embeds a bank once (through the embedding cache) and
stores it in a directory of its own, named by a digest of the teacher and the phrases:

* ``vectors.npy``: the unit float32 ``(count, dim)`` embeddings, memory-mapped on load, so
  opening a million-phrase bank reads no embeddings;
* ``phrases.json``: the phrases, in row order;
* ``index.faiss``: above :data:`cellcube.decode.index.EXACT_MAX` phrases, the FAISS index the
  bank is searched with (:mod:`cellcube.decode.index`); smaller banks are searched exactly;
* ``manifest.json``, written last: format, teacher identity, count, dimension, the SHA-256 of
  the phrases and of ``vectors.npy``, and whether there is an index.

Every file is written atomically. A stored bank is a cache of what the teacher computes, so
one that fails its checks when opened (missing or unreadable files, a manifest for another
teacher or other phrases, a wrong count, shape or dtype, an index of the wrong size) is rebuilt,
with a warning naming the file and the check; :func:`open_bank` alone raises the error. The
SHA-256 of ``vectors.npy`` is compared on open only with ``verify=True`` (it reads every byte).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellcube.config import CacheConfig
from cellcube.data.corpora import BUILTIN_BANKS, load_builtin_bank
from cellcube.data.readers import read_path
from cellcube.decode import index as ann
from cellcube.embed.encode import embed
from cellcube.embed.teachers import Teacher
from cellcube.errors import CellcubeError, DataError
from cellcube.eval.similarity import topk_dot, unit
from cellcube.io import atomic_open, write_json, write_text

__all__ = ["PhraseBank", "bank_digest", "open_bank", "read_bank_file", "store_bank", "stored_bank"]

log = logging.getLogger(__name__)

FORMAT = 1
"""Version of the stored bank layout."""


class PhraseBank:
    """Distinct phrases with their unit float32 teacher embeddings, searched exactly in blocks,
    or through a FAISS ``index`` over the same rows when one is given.

    ``embeddings`` (n, D) are normalised here, unless ``unit_rows`` says they already are (a
    stored bank's memory-mapped rows, which are then never copied).
    """

    def __init__(
        self,
        phrases: Sequence[str],
        embeddings: torch.Tensor,
        index: Any = None,
        *,
        unit_rows: bool = False,
    ) -> None:
        if len(phrases) != embeddings.shape[0]:
            raise ValueError("phrases and embeddings differ in length")
        if not phrases:
            raise DataError("phrase bank is empty")
        self.phrases = list(phrases)
        self.embeddings = embeddings if unit_rows else unit(embeddings)
        self.index = index

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return int(self.embeddings.shape[1])

    def search(self, queries: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-``k`` phrases and cosine scores for each row of ``queries`` (n, D), best first."""
        q = unit(queries)
        if self.index is None:
            scores, indices = (t.tolist() for t in topk_dot(q, self.embeddings, k))
        else:
            scores, indices = (a.tolist() for a in ann.search(self.index, q.numpy(), k))
        return [
            [(self.phrases[i], s) for i, s in zip(idx, val, strict=True) if i >= 0]
            for idx, val in zip(indices, scores, strict=True)
        ]


def _mapped(array: np.ndarray) -> torch.Tensor:
    """A tensor over a read-only memory-mapped array, without a copy (it is never written)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(array)


def read_bank_file(path: str | Path) -> list[str]:
    """Distinct phrases from a ``.txt`` file (one per line), else the answers of a data file or
    directory read strictly by :func:`cellcube.data.read_path`; a built-in bank's name
    (:data:`~cellcube.data.corpora.BUILTIN_BANKS`, e.g. ``chitchat``) when no such path exists."""
    p = Path(path)
    if str(path) in BUILTIN_BANKS and not p.exists():
        return load_builtin_bank(str(path))
    if p.suffix.lower() != ".txt":
        return list(dict.fromkeys(pair.answer for pair in read_path(p)[0]))
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: invalid UTF-8 at byte {exc.start}") from None
    phrases = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not phrases:
        raise DataError(f"{p}: no phrases found")
    return phrases


# --------------------------------------------------------------------------------------------
# Stored banks
# --------------------------------------------------------------------------------------------


def bank_digest(phrases: Sequence[str], teacher_id: str) -> str:
    """SHA-256 (hex) of a teacher identity and a list of phrases: the stored bank's key."""
    return hashlib.sha256(json.dumps([teacher_id, *phrases]).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def store_bank(
    directory: Path,
    phrases: Sequence[str],
    vectors: np.ndarray,
    teacher_id: str,
    *,
    exact_max: int = ann.EXACT_MAX,
) -> None:
    """Store ``phrases`` with their embeddings ``vectors`` (n, D; normalised here) in
    ``directory``, with a FAISS index when there are more than ``exact_max``; the manifest is
    written last, so a bank whose writing was interrupted has none and is rebuilt."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").unlink(missing_ok=True)
    vectors = unit(torch.from_numpy(np.asarray(vectors))).numpy()
    with atomic_open(directory / "vectors.npy", "wb") as fh:
        np.save(fh, vectors)
    write_text(directory / "phrases.json", json.dumps(list(phrases), ensure_ascii=False))
    indexed = len(phrases) > exact_max
    if indexed:
        ann.save_index(ann.build_index(vectors), directory / "index.faiss")
    write_json(
        directory / "manifest.json",
        {
            "format": FORMAT,
            "teacher": teacher_id,
            "count": len(phrases),
            "dim": int(vectors.shape[1]),
            "phrases_sha256": bank_digest(phrases, teacher_id),
            "vectors_sha256": _file_sha256(directory / "vectors.npy"),
            "index": "faiss-ivf-flat-ip" if indexed else None,
        },
    )


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CellcubeError(f"{path}: missing (the bank was never completely written)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CellcubeError(f"{path}: not valid JSON ({exc})") from None
    keys = ("format", "teacher", "count", "dim", "phrases_sha256", "vectors_sha256", "index")
    if not isinstance(manifest, dict) or any(k not in manifest for k in keys):
        raise CellcubeError(f"{path}: not a phrase bank manifest (needs {', '.join(keys)})")
    if manifest["format"] != FORMAT:
        raise CellcubeError(f"{path}: format {manifest['format']!r}, expected {FORMAT}")
    return manifest


def _check(ok: bool, path: Path, what: str) -> None:
    if not ok:
        raise CellcubeError(f"{path}: {what}")


def open_bank(
    directory: Path,
    phrases: Sequence[str] | None = None,
    teacher_id: str | None = None,
    *,
    verify: bool = False,
) -> PhraseBank:
    """The bank stored in ``directory``, its embeddings memory-mapped.

    With ``phrases`` and ``teacher_id`` it must be the bank of exactly those; ``verify`` also
    compares the SHA-256 of ``vectors.npy``. Raises :class:`CellcubeError` naming the file and
    the failed check.
    """
    directory = Path(directory)
    m = _read_manifest(directory)
    manifest = directory / "manifest.json"
    if teacher_id is not None:
        _check(m["teacher"] == teacher_id, manifest, f"for teacher {m['teacher']!r}")
    if phrases is not None:
        _check(m["phrases_sha256"] == bank_digest(phrases, m["teacher"]), manifest, "other phrases")
    vpath = directory / "vectors.npy"
    try:
        vectors = np.load(vpath, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CellcubeError(f"{vpath}: not a readable .npy file ({exc})") from None
    shape = (m["count"], m["dim"])
    _check(vectors.shape == shape, vpath, f"shape {vectors.shape}, manifest says {shape}")
    _check(vectors.dtype == np.float32, vpath, f"dtype {vectors.dtype}, expected float32")
    if verify:
        _check(_file_sha256(vpath) == m["vectors_sha256"], vpath, "checksum differs from manifest")
    if phrases is None:
        ppath = directory / "phrases.json"
        try:
            phrases = json.loads(ppath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CellcubeError(f"{ppath}: not readable ({exc})") from None
        _check(isinstance(phrases, list) and len(phrases) == m["count"], ppath, "wrong count")
    index = None
    if m["index"] is not None:
        index = ann.load_index(directory / "index.faiss", m["count"], m["dim"])
    return PhraseBank(phrases, _mapped(vectors), index, unit_rows=True)


def stored_bank(
    root: Path,
    phrases: Sequence[str],
    teacher: Teacher,
    cache: CacheConfig,
    *,
    exact_max: int = ann.EXACT_MAX,
) -> PhraseBank:
    """The bank of ``phrases`` under ``teacher``, from ``root/<digest>/`` when it is stored
    there and passes its checks; else embedded through ``cache``, stored and opened."""
    if not phrases:
        raise DataError("phrase bank is empty")
    directory = Path(root) / bank_digest(phrases, teacher.identity)[:16]
    if (directory / "manifest.json").exists():
        try:
            return open_bank(directory, phrases, teacher.identity)
        except CellcubeError as exc:
            log.warning("rebuilding the stored phrase bank: %s", exc)
    vectors = embed(phrases, teacher, cache)
    store_bank(directory, phrases, vectors, teacher.identity, exact_max=exact_max)
    return open_bank(directory, phrases, teacher.identity)
