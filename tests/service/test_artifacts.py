"""The content-addressed artifact store: atomic writes, dedup, limits, and verification on every read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from service.catalog.artifacts import ArtifactStore
from service.errors import ArtifactCorruptError, ArtifactMissingError, PayloadTooLargeError


@pytest.fixture
def art(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def _files(store: ArtifactStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


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
    assert _files(art) == [art.path_for(a.sha256)]  # no temp files left behind


def test_corrupted_file_fails_every_read_loudly(art: ArtifactStore, tmp_path: Path) -> None:
    stored = art.put_bytes(b"the real bytes")
    path = art.path_for(stored.sha256)
    path.chmod(0o644)
    path.write_bytes(b"the evil bytes")  # same size, different content
    with pytest.raises(ArtifactCorruptError, match="corrupt"):
        art.read_bytes(stored.sha256)
    with pytest.raises(ArtifactCorruptError):
        art.verify(stored.sha256)
    with pytest.raises(ArtifactCorruptError):
        art.iter_verified(stored.sha256)  # raises before any chunk is handed out
    with pytest.raises(ArtifactCorruptError):
        art.copy_to(stored.sha256, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()  # a failed copy leaves nothing at the destination


def test_truncated_file_is_corrupt_and_missing_file_is_missing(art: ArtifactStore) -> None:
    stored = art.put_bytes(b"0123456789")
    path = art.path_for(stored.sha256)
    path.chmod(0o644)
    path.write_bytes(b"01234")
    with pytest.raises(ArtifactCorruptError):
        art.read_bytes(stored.sha256, size=10)
    path.unlink()
    with pytest.raises(ArtifactMissingError, match="missing"):
        art.read_bytes(stored.sha256)
    with pytest.raises(ArtifactMissingError):
        art.verify(stored.sha256)


def test_storing_good_bytes_again_repairs_a_corrupt_copy(art: ArtifactStore) -> None:
    stored = art.put_bytes(b"good")
    path = art.path_for(stored.sha256)
    path.chmod(0o644)
    path.write_bytes(b"bad!")
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
        assert w.path.exists()
    assert _files(art) == []


def test_rejects_paths_that_are_not_sha256(art: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="sha256"):
        art.path_for("../../etc/passwd")
