"""Content-addressed artifact files under ``KF_ARTIFACT_DIR``, verified against their sha256 on every read.

Layout: ``<root>/<sha[:2]>/<sha>``, read-only once written. Writes go to ``<root>/.tmp/`` first, are hashed while
they stream in, fsync-ed and renamed into place, so a reader never sees a partial file and a crash leaves only
a temp file behind. The store knows files, not the catalog: ``service.catalog.queries`` records artifact rows.

    store = ArtifactStore(settings.artifact_dir)
    with store.writer(max_bytes=limit) as w:      # upload: stream, validate w.path, then commit
        w.write(chunk)
        stored = w.commit()                        # not committed -> the temp file is deleted
    store.read_bytes(stored.sha256)                # raises ArtifactCorruptError if the bytes changed
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from service.errors import ArtifactCorruptError, ArtifactMissingError, PayloadTooLargeError

__all__ = ["ArtifactStore", "ArtifactWriter", "StoredFile"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    """A file in the store: its hash, size and path relative to the store's root."""

    sha256: str
    size: int
    path: str


class ArtifactWriter:
    """Streams bytes into a temp file while hashing them; :meth:`commit` moves the file into the store."""

    def __init__(
        self, store: ArtifactStore, *, max_bytes: int | None = None, suffix: str = "", durable: bool = True
    ) -> None:
        self._store = store
        self._durable = durable
        self._max = max_bytes
        self.path = store.tmp_dir / f"{uuid.uuid4().hex}.upload{suffix}"  # validators may read it before commit
        self._file = self.path.open("xb")
        self._hash = hashlib.sha256()
        self.size = 0
        self._done = False  # committed or aborted

    def write(self, chunk: bytes) -> None:
        if self._done:
            raise RuntimeError("write after commit or abort")
        self.size += len(chunk)
        if self._max is not None and self.size > self._max:
            self.abort()
            raise PayloadTooLargeError(
                f"the upload exceeds the limit of {self._max} bytes (KF_MAX_UPLOAD_BYTES); send a smaller file"
            )
        self._hash.update(chunk)
        self._file.write(chunk)

    def finish(self) -> None:
        """Flush and close the temp file so it can be validated; call :meth:`commit` or :meth:`abort` after."""
        if not self._file.closed:
            self._file.flush()
            if self._durable:
                os.fsync(self._file.fileno())
            self._file.close()

    def commit(self) -> StoredFile:
        self.finish()
        self._done = True
        return self._store._adopt(self.path, self._hash.hexdigest(), self.size, durable=self._durable)

    def abort(self) -> None:
        """Discard the upload; a no-op after :meth:`commit`."""
        if self._done:
            return
        self._done = True
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            self.abort()


class ArtifactStore:
    """Files named by their sha256 under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / ".tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def relative_path(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return f"{sha256[:2]}/{sha256}"

    def path_for(self, sha256: str) -> Path:
        return self.root / self.relative_path(sha256)

    def writer(self, *, max_bytes: int | None = None, suffix: str = "", durable: bool = True) -> ArtifactWriter:
        return ArtifactWriter(self, max_bytes=max_bytes, suffix=suffix, durable=durable)

    def put_bytes(self, data: bytes, *, durable: bool = True) -> StoredFile:
        """Store ``data``. ``durable=False`` skips the fsyncs: for derived files that can be rebuilt (assembled
        graphs), whose loss in a power cut is caught by the hash check on read and repaired by rebuilding."""
        with self.writer(durable=durable) as w:
            w.write(data)
            return w.commit()

    def put_file(self, src: str | os.PathLike[str]) -> StoredFile:
        with self.writer() as w, Path(src).open("rb") as f:
            while chunk := f.read(_CHUNK):
                w.write(chunk)
            return w.commit()

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def verify(self, sha256: str, *, size: int | None = None) -> Path:
        """The file's path after checking its content hashes to ``sha256`` (and has ``size`` bytes)."""
        path = self.path_for(sha256)
        got, n = _hash_file(path, sha256)
        self._check(sha256, got, size, n, path)
        return path

    def read_bytes(self, sha256: str, *, size: int | None = None) -> bytes:
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissingError(f"artifact {sha256} is missing from the store ({path})") from None
        self._check(sha256, hashlib.sha256(data).hexdigest(), size, len(data), path)
        return data

    def iter_verified(self, sha256: str, *, size: int | None = None) -> Iterator[bytes]:
        """Verify the whole file now, then return its chunks: corrupt bytes are never handed out."""
        return _iter_file(self.verify(sha256, size=size))

    def copy_to(self, sha256: str, dest: str | os.PathLike[str], *, size: int | None = None) -> Path:
        """Copy the artifact to ``dest`` (atomically), verifying the bytes as they are copied."""
        src, out = self.path_for(sha256), Path(dest)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
        h, n = hashlib.sha256(), 0
        try:
            with src.open("rb") as f, tmp.open("xb") as g:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    n += len(chunk)
                    g.write(chunk)
            self._check(sha256, h.hexdigest(), size, n, src)
            os.replace(tmp, out)
        except FileNotFoundError:
            raise ArtifactMissingError(f"artifact {sha256} is missing from the store ({src})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return out

    def delete(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def _check(self, sha256: str, got: str, size: int | None, n: int, path: Path) -> None:
        if got != sha256 or (size is not None and n != size):
            raise ArtifactCorruptError(
                f"artifact {sha256} is corrupt: the file {path} ({n} bytes) hashes to {got}; it will not be "
                "served. Restore it from a backup or re-create it (re-upload the file or re-run the job)"
            )

    def _adopt(self, tmp: Path, sha256: str, size: int, *, durable: bool = True) -> StoredFile:
        final = self.path_for(sha256)
        try:
            if final.exists():
                got, n = _hash_file(final, sha256)
                try:
                    self._check(sha256, got, size, n, final)
                    tmp.unlink()  # same content already stored
                    return StoredFile(sha256, size, self.relative_path(sha256))
                except ArtifactCorruptError:
                    final.chmod(0o644)  # a damaged copy is replaced by the good bytes we just received
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o444)
            os.replace(tmp, final)
            if durable:
                _fsync_dir(final.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return StoredFile(sha256, size, self.relative_path(sha256))


def _hash_file(path: Path, sha256: str) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                n += len(chunk)
    except FileNotFoundError:
        raise ArtifactMissingError(f"artifact {sha256} is missing from the store ({path})") from None
    return h.hexdigest(), n


def _iter_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
