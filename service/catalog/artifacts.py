"""Content-addressed artifacts at ``KF_ARTIFACT_URL``, verified against their sha256 on every read.

The store is a local directory (the embedded default) or an object-store prefix such as ``s3://bucket/kf``
(:mod:`service.catalog.object_store`); both use the layout ``<root>/<sha[:2]>/<sha>``. Writes go to a local temp file
first and are hashed while they stream in. On disk the file is fsync-ed and renamed into place, read-only; on
object storage it is published with one atomic PUT. Either way a reader never sees a partial artifact and a
crash leaves only a temp file behind. Remote artifacts are read through a bounded local cache
(:mod:`service.catalog.artifact_cache`); every read, cached or not, is checked against the hash, and a corrupt object is
refused exactly like a corrupt file. The store knows files, not the catalog: ``service.catalog.queries`` records rows.

    store = open_store(settings)
    with store.writer(max_bytes=limit) as w:      # upload: stream, validate w.path, then commit
        w.write(chunk)
        stored = w.commit()                        # not committed -> the temp file is deleted
    store.read_bytes(stored.sha256)                # raises ArtifactCorruptError if the bytes changed
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from service.catalog.artifact_cache import ReadCache
from service.catalog.object_store import RemoteObjects, is_remote_url
from service.config import Settings
from service.errors import ArtifactCorruptError, ArtifactMissingError, PayloadTooLargeError

__all__ = ["ArtifactStore", "ArtifactWriter", "StoredFile", "open_store"]

log = logging.getLogger(__name__)

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
    """Artifacts named by their sha256 in a local directory or under an object-store URL.

    ``location`` is a path (or ``file://`` URL) or a remote fsspec URL; remote stores read through a
    :class:`ReadCache` in ``cache_dir`` bounded by ``cache_bytes``.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_bytes: int = 1 << 30,
        endpoint_url: str | None = None,
    ) -> None:
        url = str(location)
        self.location = url
        self.remote: RemoteObjects | None = None
        self.cache: ReadCache | None = None
        if is_remote_url(url):
            self.remote = RemoteObjects(url, endpoint_url=endpoint_url)
            self.cache = ReadCache(cache_dir or Path("kf-data/artifact-cache"), max_bytes=cache_bytes)
            self.root = self.cache.dir  # where local copies live
            self.tmp_dir = self.cache.tmp_dir
        else:
            self.root = Path(url.removeprefix("file://")).resolve()
            self.tmp_dir = self.root / ".tmp"
            self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def relative_path(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return f"{sha256[:2]}/{sha256}"

    def path_for(self, sha256: str) -> Path:
        """The local file of an artifact: the artifact itself on disk, its cached copy for a remote store."""
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
        if self.remote is not None:
            return self.remote.exists(self.relative_path(sha256))
        return self.path_for(sha256).is_file()

    def verify(self, sha256: str, *, size: int | None = None) -> None:
        """Check that the stored bytes (on object storage: the object itself, not a cached copy) hash to
        ``sha256`` and have ``size`` bytes."""
        if self.remote is not None:
            self._fetch(sha256, size).close()
            return
        path = self.path_for(sha256)
        got, n = _hash_file(path, sha256)
        self._check(sha256, got, size, n, str(path))

    def read_bytes(self, sha256: str, *, size: int | None = None) -> bytes:
        with self._open_verified(sha256, size) as f:
            return f.read()

    def iter_verified(self, sha256: str, *, size: int | None = None) -> Iterator[bytes]:
        """Verify the whole artifact now, then return its chunks: corrupt bytes are never handed out."""
        return _iter_open(self._open_verified(sha256, size))

    def copy_to(self, sha256: str, dest: str | os.PathLike[str], *, size: int | None = None) -> Path:
        """Copy the artifact to ``dest`` (atomically), verified; nothing is left at ``dest`` if it is corrupt."""
        out = Path(dest)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
        try:
            with self._open_verified(sha256, size) as f, tmp.open("xb") as g:
                while chunk := f.read(_CHUNK):
                    g.write(chunk)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out

    def delete(self, sha256: str) -> None:
        if self.remote is not None and self.cache is not None:
            self.remote.delete(self.relative_path(sha256))
            self.cache.discard(sha256)
            return
        self.path_for(sha256).unlink(missing_ok=True)

    def list_stored(self) -> list[tuple[str, int, float]]:
        """``(sha256, size, modification time)`` of every artifact in the store (temp files excluded)."""
        out = []
        if self.remote is not None:
            for key, size, mtime in self.remote.list_objects():
                sha = key.rsplit("/", 1)[-1]
                if key == self._key_or_none(sha):
                    out.append((sha, size, mtime))
            return out
        for path in self.root.glob("??/*"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if path.is_file() and self._key_or_none(path.name) == f"{path.parent.name}/{path.name}":
                    out.append((path.name, st.st_size, st.st_mtime))
        return out

    def stored_mtime(self, sha256: str) -> float | None:
        """When the artifact was last stored (storing existing content refreshes it), or None if it is absent."""
        if self.remote is not None:
            return self.remote.mtime(self.relative_path(sha256))
        try:
            return self.path_for(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def _key_or_none(self, sha256: str) -> str | None:
        try:
            return self.relative_path(sha256)
        except ValueError:
            return None

    def describe(self, sha256: str) -> str:
        """Where the artifact lives, for messages: the file, or the object's URL."""
        if self.remote is not None:
            return self.remote.describe(self.relative_path(sha256))
        return str(self.path_for(sha256))

    def _open_verified(self, sha256: str, size: int | None) -> IO[bytes]:
        """An open handle on bytes that hash to ``sha256``, positioned at the start."""
        if self.remote is not None and self.cache is not None:
            cached = self.cache.lookup(sha256)
            if cached is not None:
                with contextlib.suppress(FileNotFoundError, ArtifactCorruptError):  # evicted or damaged: refetch
                    return self._open_checked(cached, sha256, size, str(cached))
                self.cache.discard(sha256)
            return self._fetch(sha256, size)
        path = self.path_for(sha256)
        try:
            return self._open_checked(path, sha256, size, str(path))
        except FileNotFoundError:
            raise _missing(sha256, path) from None

    def _open_checked(self, path: Path, sha256: str, size: int | None, where: str) -> IO[bytes]:
        f = path.open("rb")
        try:
            h, n = hashlib.sha256(), 0
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                n += len(chunk)
            self._check(sha256, h.hexdigest(), size, n, where)
            f.seek(0)
        except BaseException:
            f.close()
            raise
        return f

    def _fetch(self, sha256: str, size: int | None) -> IO[bytes]:
        """Download a remote artifact into the cache, hashing it on the way; an open handle on the copy."""
        assert self.remote is not None and self.cache is not None
        key = self.relative_path(sha256)
        tmp = self.cache.temp_path()
        try:
            h, n = hashlib.sha256(), 0
            with self.remote.open(key) as src, tmp.open("xb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    n += len(chunk)
                    dst.write(chunk)
            self._check(sha256, h.hexdigest(), size, n, self.remote.describe(key))
            f = tmp.open("rb")  # open before the rename: an eviction by another process cannot take it away
            self.cache.adopt(tmp, sha256)
            return f
        finally:
            tmp.unlink(missing_ok=True)

    def _check(self, sha256: str, got: str, size: int | None, n: int, where: str) -> None:
        if got != sha256 or (size is not None and n != size):
            log.error("artifact %s is corrupt: %s (%d bytes) hashes to %s", sha256, where, n, got)  # where: logs only
            raise ArtifactCorruptError(
                f"artifact {sha256} is corrupt: the stored copy ({n} bytes) hashes to {got}; it will not be "
                "served. Restore it from a backup or re-create it (re-upload the file or re-run the job)"
            )

    def _adopt(self, tmp: Path, sha256: str, size: int, *, durable: bool = True) -> StoredFile:
        if self.remote is not None and self.cache is not None:
            try:
                # Always upload, even if the key exists: same bytes by construction, and a damaged copy is healed.
                self.remote.put_file(tmp, self.relative_path(sha256))
                tmp.chmod(0o444)
                self.cache.adopt(tmp, sha256)  # the writer's host will likely read it soon
            finally:
                tmp.unlink(missing_ok=True)
            return StoredFile(sha256, size, self.relative_path(sha256))
        final = self.path_for(sha256)
        try:
            if final.exists():
                got, n = _hash_file(final, sha256)
                try:
                    self._check(sha256, got, size, n, str(final))
                    tmp.unlink()  # same content already stored
                    os.utime(final)  # fresh again: the collector spares files stored within its grace period
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


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store the settings describe (``KF_ARTIFACT_URL`` and its cache and endpoint settings)."""
    return ArtifactStore(
        settings.artifact_url,
        cache_dir=settings.artifact_cache_dir,
        cache_bytes=settings.artifact_cache_bytes,
        endpoint_url=settings.s3_endpoint_url,
    )


def _hash_file(path: Path, sha256: str) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                n += len(chunk)
    except FileNotFoundError:
        raise _missing(sha256, path) from None
    return h.hexdigest(), n


def _missing(sha256: str, path: Path) -> ArtifactMissingError:
    """The error for a file the store should hold; where it was looked for goes to the log, never to a client."""
    log.error("artifact %s is missing from the store: no file %s", sha256, path)
    return ArtifactMissingError(
        f"artifact {sha256} is missing from the artifact store; restore it from a backup or re-create it "
        "(re-upload the file or re-run the job)"
    )


def _iter_open(f: IO[bytes]) -> Iterator[bytes]:
    with f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
