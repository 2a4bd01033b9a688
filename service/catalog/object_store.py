"""Artifact bytes on object storage (S3 or any S3-compatible store), through fsspec.

``KF_ARTIFACT_URL=s3://bucket/prefix`` puts every artifact at ``<prefix>/<sha[:2]>/<sha>``, the same layout as on
local disk. Endpoint and credentials follow the AWS SDK's usual sources (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance or pod role...); ``KF_S3_ENDPOINT_URL`` points at a store
other than AWS (MinIO, Ceph, a test server). Other fsspec URLs (``gs://``, ``az://``) go through the same code
when their fsspec package is installed, but only S3 is tested.

Publishing is one PUT per object (a multipart upload for large files, completed in one call). S3 makes an object
visible only once its PUT or its multipart completion has succeeded, and replaces an existing key atomically, so a
reader sees the whole old object, the whole new one or none: never a partial one. Keys are content hashes, so two
writers of one key write the same bytes, and rewriting a key heals a damaged copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from service.errors import ArtifactMissingError, ArtifactStoreUnavailableError, ServiceError

__all__ = ["RemoteObjects", "is_remote_url"]

_CHUNK = 1 << 20


def is_remote_url(url: str) -> bool:
    """True for ``scheme://...`` URLs other than ``file://`` (those, and plain paths, are local directories)."""
    return "://" in url and not url.startswith("file://")


class RemoteObjects:
    """Objects under one fsspec URL prefix; keys are paths relative to it (``ab/abcd...``)."""

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        import fsspec  # here, not at the top: fsspec comes with the optional s3 extra (kf-service[s3])

        self.url = url.rstrip("/")
        self.endpoint_url = endpoint_url
        options: dict[str, Any] = {}
        if url.startswith(("s3://", "s3a://")):
            # Listing caches would make exists() answer from a stale listing after another host's upload.
            options = {"use_listings_cache": False, "skip_instance_cache": True}
            if endpoint_url:
                options["endpoint_url"] = endpoint_url
        try:
            self._fs, self._root = fsspec.url_to_fs(self.url, **options)
        except ImportError as e:
            raise ArtifactStoreUnavailableError(
                f"KF_ARTIFACT_URL={url} needs a package that is not installed ({e}); install kf-service[s3]"
            ) from None

    def describe(self, key: str) -> str:
        return f"{self.url}/{key}"

    def put_file(self, src: Path, key: str) -> None:
        """Upload ``src`` to ``key`` in one atomic publish (see the module docstring)."""
        with self._errors(key):
            self._fs.put_file(str(src), self._path(key))

    @contextmanager
    def open(self, key: str) -> Iterator[IO[bytes]]:
        """The object's bytes as a stream; :class:`ArtifactMissingError` if there is no such object."""
        with self._errors(key):
            try:
                f = self._fs.open(self._path(key), "rb", block_size=_CHUNK, cache_type="none")
            except FileNotFoundError:
                raise ArtifactMissingError(f"artifact {key.rsplit('/', 1)[-1]} is missing from the store") from None
        try:
            yield f
        finally:
            f.close()

    def exists(self, key: str) -> bool:
        with self._errors(key):
            return bool(self._fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        with self._errors(key), suppress(FileNotFoundError):
            self._fs.rm_file(self._path(key))

    def list_keys(self) -> list[str]:
        """Every key under the prefix (for tests and maintenance; lists the whole prefix)."""
        with self._errors(""):
            found = self._fs.find(self._root)
        return sorted(str(p)[len(self._root) :].lstrip("/") for p in found)

    def list_objects(self) -> list[tuple[str, int, float]]:
        """``(key, size, last modified as a POSIX time)`` of every object under the prefix (for the collector)."""
        with self._errors(""):
            found = self._fs.find(self._root, detail=True)
        out = []
        for path, info in found.items():
            key = str(path)[len(self._root) :].lstrip("/")
            out.append((key, int(info.get("size") or 0), _mtime(info)))
        return out

    def mtime(self, key: str) -> float | None:
        """The object's last-modified time (POSIX), or None if there is no such object."""
        with self._errors(key):
            try:
                return _mtime(self._fs.info(self._path(key)))
            except FileNotFoundError:
                return None

    def _path(self, key: str) -> str:
        return f"{self._root}/{key}"

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        # Connection and permission failures become one error that says which store and what to check.
        try:
            yield
        except (ServiceError, FileNotFoundError):
            raise
        except Exception as e:  # botocore's connection errors are not OSErrors
            raise ArtifactStoreUnavailableError(
                f"the artifact store {self.url} failed on {key or 'a listing'} ({type(e).__name__}: {e}); check "
                "KF_ARTIFACT_URL, KF_S3_ENDPOINT_URL and the AWS credentials, and that the bucket exists"
            ) from e


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if value is None:
        return 0.0
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)
