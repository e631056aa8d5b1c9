"""On-disk embedding cache, so each text is run through a teacher only once.

Embedding a corpus with a transformer is the slowest step of a cellcube run and the teacher is
frozen, so embeddings are stored in a SQLite file keyed by ``(teacher identity, sha256(text))``.
The teacher identity (see :attr:`cellcube.embed.teachers.Teacher.identity`) changes whenever the
model
files, backend, dtype or max length change, so stale vectors are never reused.

Robustness: the database runs in WAL mode with a busy timeout so several processes can share one
file (opening retries until the timeout, because SQLite answers "database is locked" at once,
without waiting, when two processes switch a new file to WAL together); every write is a single
transaction, so a crash never leaves a half-written batch; each row stores its dimension and is
validated on read (a blob of the wrong length or containing NaN/inf counts as missing and is
recomputed and overwritten).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from cellcube.errors import CellcubeError, TeacherError

if TYPE_CHECKING:
    from cellcube.embed.teachers import Teacher

__all__ = ["EmbeddingCache", "embed_texts"]

_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_S = 60.0
# Stay well below SQLite's limit on bound parameters per statement.
_QUERY_CHUNK = 500


def _text_key(text: str) -> str:
    """Hex sha256 of the UTF-8 bytes of ``text``: the per-text half of a cache key."""
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def _decode(dim: object, blob: object) -> np.ndarray | None:
    """A stored row as a float32 vector, or None when it is malformed or not finite."""
    if not isinstance(dim, int) or dim < 1 or not isinstance(blob, bytes):
        return None
    if len(blob) != dim * 4:
        return None
    vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if not np.isfinite(vec).all():
        return None
    return vec


class EmbeddingCache:
    """SQLite store of embeddings keyed by (teacher identity, sha256 of text).

    Vectors are stored as little-endian float32 bytes together with their dimension. Use it as a
    context manager, or call :meth:`close` when done.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (or create) the cache at ``path``, creating parent directories and the table.

        Raises :class:`~cellcube.errors.CellcubeError` naming the file when it cannot be created
        or is not a SQLite database.
        """
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CellcubeError(
                f"{self.path}: cannot create embedding cache ({exc.strerror or exc})"
            ) from None
        if self.path.is_dir():
            raise CellcubeError(
                f"{self.path}: is a directory, not an embedding cache file; "
                "set cache.path to a file"
            )
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S
            )
        except sqlite3.Error as exc:
            raise CellcubeError(f"{self.path}: cannot open embedding cache ({exc})") from None
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _setup(self) -> None:
        """Configure the connection and create the schema, retrying while another process holds
        the lock (for up to the busy timeout)."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_S
        while True:
            try:
                return self._configure()
            except sqlite3.DatabaseError as exc:
                busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise self._db_error(exc) from None
                time.sleep(0.02)

    def _configure(self) -> None:
        """One attempt at :meth:`_setup` (idempotent; raises SQLite's errors as they come)."""
        conn = self._connection
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise CellcubeError(
                f"{self.path}: embedding cache written by a newer cellcube (schema "
                f"{version} > {_SCHEMA_VERSION}); upgrade cellcube or set cache.path to "
                "another file"
            )
        with conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " teacher TEXT NOT NULL,"
                " text_sha256 TEXT NOT NULL,"
                " dim INTEGER NOT NULL,"
                " vector BLOB NOT NULL,"
                " PRIMARY KEY (teacher, text_sha256)"
                ") WITHOUT ROWID"
            )
            if version < _SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def _db_error(self, exc: sqlite3.Error) -> CellcubeError:
        """A one-line error naming the file for a SQLite failure."""
        if isinstance(exc, sqlite3.OperationalError):
            return CellcubeError(f"{self.path}: cannot use embedding cache ({exc})")
        return CellcubeError(
            f"{self.path}: not a valid embedding cache ({exc}); delete it or set cache.path "
            "to another file"
        )

    @property
    def _connection(self) -> sqlite3.Connection:
        """The open connection; raises if the cache was closed."""
        if self._conn is None:
            raise CellcubeError(f"{self.path}: embedding cache is closed")
        return self._conn

    def get_many(self, teacher_id: str, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Cached vectors for ``texts`` under ``teacher_id``, in order; None where missing.

        Rows that fail validation (wrong blob length for their dim, NaN or inf) count as missing.
        """
        keys = [_text_key(t) for t in texts]
        found: dict[str, np.ndarray | None] = {}
        unique = list(dict.fromkeys(keys))
        conn = self._connection
        try:
            for start in range(0, len(unique), _QUERY_CHUNK):
                chunk = unique[start : start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    "SELECT text_sha256, dim, vector FROM embeddings "
                    f"WHERE teacher = ? AND text_sha256 IN ({marks})",
                    (teacher_id, *chunk),
                ).fetchall()
                for key, dim, blob in rows:
                    found[key] = _decode(dim, blob)
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None
        return [found.get(k) for k in keys]

    def put_many(self, teacher_id: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``texts[i]`` under ``teacher_id`` in one atomic transaction.

        Existing rows for the same keys are replaced. ``vectors`` must be 2-D with one finite row
        per text.
        """
        arr = np.ascontiguousarray(vectors, dtype="<f4")
        if arr.ndim != 2 or arr.shape[0] != len(texts):
            raise ValueError(
                f"put_many: expected vectors of shape ({len(texts)}, dim), got {arr.shape}"
            )
        if arr.size and not np.isfinite(arr).all():
            raise ValueError("put_many: vectors contain NaN or inf")
        if not len(texts):
            return
        dim = int(arr.shape[1])
        rows = [
            (teacher_id, _text_key(text), dim, arr[i].tobytes()) for i, text in enumerate(texts)
        ]
        conn = self._connection
        try:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO embeddings (teacher, text_sha256, dim, vector) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None

    def __len__(self) -> int:
        """Number of stored rows, over all teachers."""
        try:
            return int(self._connection.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc) from None

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EmbeddingCache:
        """Return the cache itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the cache."""
        self.close()

    def __repr__(self) -> str:
        """Show the file path."""
        return f"EmbeddingCache({str(self.path)!r})"


def _encode_finite(teacher: Teacher, texts: list[str], progress: bool) -> np.ndarray:
    """``teacher.encode(texts)``; NaN/inf in its output is a TeacherError naming the first text.

    A broken teacher (e.g. fp16 overflow) must neither reach training nor be cached.
    """
    vecs = teacher.encode(texts, progress=progress)
    finite = np.isfinite(vecs).all(axis=1) if vecs.ndim == 2 else np.array([False])
    if not finite.all():
        bad = np.flatnonzero(~finite)
        first = texts[int(bad[0])] if vecs.ndim == 2 else "?"
        shown = first if len(first) <= 60 else first[:57] + "..."
        raise TeacherError(
            f"teacher {teacher.identity}: {len(bad)} of {len(texts)} embedding(s) contain NaN or "
            f"inf (first: {shown!r}); check teacher.model and teacher.dtype"
        )
    return vecs


def embed_texts(
    teacher: Teacher,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    *,
    progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` with ``teacher``, reusing and filling ``cache``.

    Returns float32 ``(len(texts), dim)`` rows in input order. Every text is looked up first; the
    distinct missing texts are encoded in one :meth:`Teacher.encode` call and stored. When
    everything is cached the teacher is not loaded at all (``encode_calls`` stays 0). An empty
    ``texts`` still loads the teacher, to learn ``dim``.
    """
    items = list(texts)
    if not items:
        return teacher.encode([], progress=progress)
    if cache is None:
        distinct = list(dict.fromkeys(items))
        vecs = _encode_finite(teacher, distinct, progress)
        index = {t: i for i, t in enumerate(distinct)}
        return np.ascontiguousarray(vecs[[index[t] for t in items]], dtype=np.float32)

    found = cache.get_many(teacher.identity, items)
    by_text: dict[str, np.ndarray] = {}
    for text, vec in zip(items, found, strict=True):
        if vec is not None:
            by_text[text] = vec
    dims = {v.shape[0] for v in by_text.values()}
    if len(dims) > 1:  # inconsistent rows for one teacher: trust none of them
        by_text.clear()
        dims.clear()

    missing = [t for t in dict.fromkeys(items) if t not in by_text]
    if missing:
        vecs = _encode_finite(teacher, missing, progress)
        if dims and vecs.shape[1] not in dims:
            # The cached rows were written with another dimension: recompute those too.
            stale = list(by_text)
            by_text.clear()
            extra = _encode_finite(teacher, stale, progress)
            cache.put_many(teacher.identity, stale, extra)
            by_text.update(zip(stale, extra, strict=True))
        cache.put_many(teacher.identity, missing, vecs)
        by_text.update(zip(missing, vecs, strict=True))
    return np.stack([by_text[t] for t in items]).astype(np.float32, copy=False)
