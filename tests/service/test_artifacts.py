"""The content-addressed artifact store: atomic writes, dedup, limits, and verification on every read, on local
disk and on object storage (the real S3 server of ``s3_endpoint``), where it also reads through a bounded cache."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest

from service.catalog.artifacts import ArtifactStore
from service.errors import (
    ArtifactCorruptError,
    ArtifactMissingError,
    ArtifactStoreUnavailableError,
    PayloadTooLargeError,
)
from tests.conftest import S3_BUCKET
from tests.service.helpers import corrupt_artifact, free_port, stored_files


def _s3_store(endpoint: str, tmp_path: Path, *, cache_bytes: int = 1 << 20, prefix: str = "") -> ArtifactStore:
    prefix = prefix or secrets.token_hex(6)
    url = f"s3://{S3_BUCKET}/{prefix}"
    return ArtifactStore(url, cache_dir=tmp_path / "cache", cache_bytes=cache_bytes, endpoint_url=endpoint)


@pytest.fixture(params=["local", "s3"])
def art(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(tmp_path / "artifacts")
    return _s3_store(request.getfixturevalue("s3_endpoint"), tmp_path)


def _files(store: ArtifactStore) -> list[str]:
    return stored_files(store)


def _evil(_data: bytes) -> bytes:
    return b"the evil bytes"  # same size as the real bytes


def test_put_and_read_back_by_sha256(art: ArtifactStore) -> None:
    data = b"factor part bytes" * 1000
    stored = art.put_bytes(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert stored.path == f"{stored.sha256[:2]}/{stored.sha256}"
    assert art.read_bytes(stored.sha256, size=len(data)) == data
    assert b"".join(art.iter_verified(stored.sha256)) == data
    assert not os.access(art.path_for(stored.sha256), os.W_OK) or os.geteuid() == 0  # read-only (root ignores it)
    assert art.path_for(stored.sha256).stat().st_mode & 0o222 == 0


def test_same_content_is_stored_once(art: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "part.onnx"
    src.write_bytes(b"x" * 5000)
    a, b = art.put_file(src), art.put_bytes(b"x" * 5000)
    assert a == b
    expected = [str(art.path_for(a.sha256))]  # no temp files left behind (on S3: one object, one cached copy)
    if art.remote is not None:
        expected.append(f"{art.location}/{a.path}")
    assert _files(art) == sorted(expected)


def test_corrupted_file_fails_every_read_loudly(art: ArtifactStore, tmp_path: Path) -> None:
    stored = art.put_bytes(b"the real bytes")
    corrupt_artifact(art, stored.sha256, _evil)  # same size, different content
    with pytest.raises(ArtifactCorruptError, match="corrupt") as corrupt:
        art.read_bytes(stored.sha256)
    assert str(art.path_for(stored.sha256).parent) not in str(corrupt.value)  # a client may see it: no paths
    with pytest.raises(ArtifactCorruptError):
        art.verify(stored.sha256)
    with pytest.raises(ArtifactCorruptError):
        art.iter_verified(stored.sha256)  # raises before any chunk is handed out
    with pytest.raises(ArtifactCorruptError):
        art.copy_to(stored.sha256, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()  # a failed copy leaves nothing at the destination


def test_truncated_file_is_corrupt_and_missing_file_is_missing(art: ArtifactStore) -> None:
    stored = art.put_bytes(b"0123456789")
    corrupt_artifact(art, stored.sha256, lambda b: b[:5])
    with pytest.raises(ArtifactCorruptError):
        art.read_bytes(stored.sha256, size=10)
    art.delete(stored.sha256)
    with pytest.raises(ArtifactMissingError, match="missing") as missing:
        art.read_bytes(stored.sha256)
    assert str(art.path_for(stored.sha256).parent) not in str(missing.value)
    with pytest.raises(ArtifactMissingError):
        art.verify(stored.sha256)


def test_storing_good_bytes_again_repairs_a_corrupt_copy(art: ArtifactStore) -> None:
    stored = art.put_bytes(b"good")
    corrupt_artifact(art, stored.sha256, lambda b: b"bad!")
    art.put_bytes(b"good")
    assert art.read_bytes(stored.sha256) == b"good"


def test_writer_enforces_the_limit_while_streaming_and_keeps_nothing(art: ArtifactStore) -> None:
    with art.writer(max_bytes=10) as w:
        w.write(b"12345")
        with pytest.raises(PayloadTooLargeError, match="limit of 10 bytes"):
            w.write(b"678901")
    assert _files(art) == []


def test_uncommitted_writer_leaves_nothing(art: ArtifactStore) -> None:
    with art.writer() as w:
        w.write(b"validated later, then rejected")
        assert Path(w.path).exists()
    assert _files(art) == []


def test_rejects_paths_that_are_not_sha256(art: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="sha256"):
        art.path_for("../../etc/passwd")


# ---------------------------------------------------------------- object storage: cache, replicas, failures


def test_a_corrupt_object_is_refused_even_where_a_good_copy_was_never_cached(
    s3_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = _s3_store(s3_endpoint, tmp_path / "a")
    stored = writer.put_bytes(b"the real bytes")
    replica = _s3_store(s3_endpoint, tmp_path / "b", prefix=writer.location.rsplit("/", 1)[1])
    assert replica.read_bytes(stored.sha256) == b"the real bytes"  # another host reads it through its cache
    corrupt_artifact(replica, stored.sha256, _evil)
    with pytest.raises(ArtifactCorruptError, match="corrupt") as corrupt:
        replica.read_bytes(stored.sha256)
    where = f"{replica.location}/{stored.path}"
    assert where in caplog.text and where not in str(corrupt.value)  # the operator's log names it, a client never
    assert not replica.path_for(stored.sha256).exists()  # the bad bytes never enter the cache
    assert writer.read_bytes(stored.sha256) == b"the real bytes"  # a host with a verified copy keeps serving it


def test_a_damaged_cached_copy_is_fetched_again(s3_endpoint: str, tmp_path: Path) -> None:
    store = _s3_store(s3_endpoint, tmp_path)
    stored = store.put_bytes(b"cached bytes")
    cached = store.path_for(stored.sha256)
    cached.chmod(0o644)
    cached.write_bytes(b"rotten bytes")
    assert store.read_bytes(stored.sha256) == b"cached bytes"
    assert cached.read_bytes() == b"cached bytes"


def test_the_cache_keeps_within_its_size_by_evicting_the_least_recently_used(s3_endpoint: str, tmp_path: Path) -> None:
    store = _s3_store(s3_endpoint, tmp_path, cache_bytes=2500)
    a, b, c = (store.put_bytes(bytes([i]) * 1000) for i in range(3))
    assert store.cache is not None
    assert not store.path_for(a.sha256).exists()  # three 1000-byte files do not fit in 2500 bytes
    os.utime(store.path_for(b.sha256), (1, 1))  # b: used longest ago
    assert store.read_bytes(a.sha256) == bytes([0]) * 1000  # fetched again from the object store
    assert sorted(p.name for p in store.cache.files()) == sorted([a.sha256, c.sha256])
    assert sum(p.stat().st_size for p in store.cache.files()) <= 2500


def test_objects_are_published_whole_under_their_final_key_only(s3_endpoint: str, tmp_path: Path) -> None:
    store = _s3_store(s3_endpoint, tmp_path)
    with store.writer() as w:
        w.write(b"half an upload")
        assert store.remote is not None and store.remote.list_keys() == []  # nothing visible before commit
        stored = w.commit()
    assert store.remote.list_keys() == [stored.path]  # no temporary key, ever: one PUT to the final key


def test_an_unreachable_object_store_says_what_to_check(tmp_path: Path) -> None:
    store = ArtifactStore("s3://nowhere/kf", cache_dir=tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ArtifactStoreUnavailableError, match="KF_S3_ENDPOINT_URL"):
        store.exists("0" * 64)
