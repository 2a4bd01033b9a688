"""Teacher and dataset uploads over HTTP: valid files are stored and described; bad ones get a clear 4xx and
leave nothing behind (acceptance 4)."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from sqlalchemy import func, select

from service.catalog.artifacts import open_store
from service.catalog.models import Artifact, Dataset, Teacher
from tests.factories import npz_dataset_file
from tests.service.helpers import DIGIT_GROUPS, TeacherFiles, stored_files, upload_teacher


def _nothing_stored(session: Any, settings: Any) -> None:
    """No teacher, dataset or artifact row, and no file in the store (temp files included)."""
    for model in (Teacher, Dataset, Artifact):
        assert session.scalar(select(func.count()).select_from(model)) == 0, model.__name__
    assert stored_files(open_store(settings)) == []


def test_onnx_teacher_upload_is_validated_described_and_stored(
    client: Any, teacher_files: TeacherFiles, store: Any
) -> None:
    spec = {"name": "digits-mlp", "tasks": DIGIT_GROUPS, "class_names": {"digit": list("0123456789")}}
    r = upload_teacher(client, teacher_files.digits_onnx, spec)
    assert r.status_code == 201, r.text
    t = r.json()
    assert (t["format"], t["input_shape"], t["output_sizes"]) == ("onnx", [1, 8, 8], {"digit": 10})
    assert t["outputs"] == {"digit": "digit"} and t["features"] == ["feat_0"] and t["feature_dims"] == [16]
    assert [task["name"] for task in t["tasks"]] == ["low", "high"]
    data = teacher_files.digits_onnx.read_bytes()
    assert t["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert store.read_bytes(t["artifact"]["sha256"]) == data
    assert client.get(f"/v1/teachers/{t['id']}").json() == t
    listed = client.get("/v1/teachers").json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == t["id"]


def test_onnx_teacher_with_mapped_output_names(client: Any, tmp_path: Path) -> None:
    from tests.factories import onnx_teacher_file

    path = onnx_teacher_file(tmp_path / "t.onnx", {"digit": 10}, names=["out_0", "hidden"])
    spec = {"name": "mapped", "outputs": {"digit": "out_0"}, "features": ["hidden"]}
    r = upload_teacher(client, path, spec)
    assert r.status_code == 201, r.text
    assert r.json()["outputs"] == {"digit": "out_0"} and r.json()["feature_dims"] == [16]


def test_torchscript_teacher_upload(client: Any, teacher_files: TeacherFiles) -> None:
    spec = {"name": "ts", "input_shape": [1, 8, 8], "outputs": {"digit": 0}, "features": [1]}
    r = upload_teacher(client, teacher_files.digits_torchscript, spec)
    assert r.status_code == 201, r.text
    assert (r.json()["format"], r.json()["output_sizes"], r.json()["feature_dims"]) == (
        "torchscript",
        {"digit": 10},
        [16],
    )


def _bad_checker_onnx() -> bytes:
    # Parses as ONNX but is invalid: the node reads a tensor that nothing defines.
    node = helper.make_node("Relu", ["missing"], ["y"])
    graph = helper.make_graph(
        [node],
        "bad",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def _torch_save_zip() -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(3)}, buf)  # a zip archive, but a pickled state_dict, not TorchScript
    return buf.getvalue()


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


@pytest.mark.parametrize(
    ("filename", "content", "spec", "status", "message"),
    [
        ("model.onnx", b"definitely not a model" * 10, {}, 422, "neither an ONNX model nor a TorchScript"),
        ("model.onnx", _bad_checker_onnx(), {}, 422, "fails onnx.checker"),
        ("model.pt", pickle.dumps(_Evil()), {"input_shape": [1, 8, 8], "outputs": {"d": 0}}, 422, "pickle"),
        ("model.pt", _torch_save_zip(), {"input_shape": [1, 8, 8], "outputs": {"d": 0}}, 422, "TorchScript"),
        ("model.onnx", b"", {}, 422, "empty"),
    ],
    ids=["not-onnx", "checker-fails", "pickle-as-pt", "state-dict-zip", "empty"],
)
def test_bad_teacher_files_are_refused_and_nothing_is_stored(
    client: Any,
    session: Any,
    migrated: Any,
    filename: str,
    content: bytes,
    spec: dict[str, Any],
    status: int,
    message: str,
    capfd: Any,
) -> None:
    r = client.post(
        "/v1/teachers", files={"file": (filename, content)}, data={"spec": json.dumps({"name": "x", **spec})}
    )
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    _nothing_stored(session, migrated)
    assert "this must never run" not in capfd.readouterr().out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"outputs": {"digit": "no_such_output"}}, "unknown ONNX output 'no_such_output'"),
        ({"features": ["nope"]}, "unknown ONNX output 'nope'"),
        ({"tasks": [{"name": "t", "output": "colour"}]}, "unknown teacher output 'colour'"),
        ({"tasks": [{"name": "t", "output": "digit", "classes": [3, 12]}]}, "out of range"),
        ({"class_names": {"digit": ["a", "b"]}}, "has 2 names but output 'digit' has 10"),
        (
            {"input_shape": [3, 32, 32]},
            "the teacher takes inputs of shape (1, 8, 8) (C, H, W) per sample but the data has (3, 32, 32)",
        ),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"name": "has space"}, "name: String should match pattern"),
    ],
)
def test_specs_naming_what_the_teacher_lacks_are_refused(
    client: Any, session: Any, migrated: Any, teacher_files: TeacherFiles, spec: dict[str, Any], message: str
) -> None:
    r = upload_teacher(client, teacher_files.digits_onnx, {"name": "t", **spec})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    _nothing_stored(session, migrated)


def test_malformed_forms_are_refused(client: Any, session: Any, migrated: Any, teacher_files: TeacherFiles) -> None:
    data = teacher_files.digits_onnx.read_bytes()
    cases = [
        (client.post("/v1/teachers", json={"name": "t"}), 415, "multipart/form-data"),
        (client.post("/v1/teachers", files={"file": ("t.onnx", data)}), 422, "no 'spec' part"),
        (client.post("/v1/teachers", data={"spec": '{"name": "t"}'}, files={"other": ("x", b"1")}), 422, "no 'file'"),
        (
            client.post("/v1/teachers", files={"file": ("t.onnx", data)}, data={"spec": "{not json"}),
            422,
            "spec is invalid",
        ),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["detail"]
    _nothing_stored(session, migrated)


def test_oversize_upload_is_refused_while_streaming(tmp_path: Path, database_url: str) -> None:
    from service.catalog.migrate import upgrade
    from tests.conftest import make_settings, open_client

    settings = make_settings(tmp_path, database_url, max_upload_bytes=64 << 10)
    upgrade(settings)
    with open_client(settings) as client:

        def chunks() -> Any:  # no Content-Length: the limit must hold on the bytes actually received
            yield b'--b\r\nContent-Disposition: form-data; name="spec"\r\n\r\n{"name": "big"}\r\n'
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.onnx"\r\n\r\n'
            for _ in range(100):
                yield b"\0" * (16 << 10)
            yield b"\r\n--b--\r\n"

        r = client.post("/v1/teachers", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413, r.text
        assert "65536 bytes" in r.json()["detail"]
        big = b"\0" * (128 << 10)  # with a Content-Length, refused before reading the body
        r = client.post("/v1/teachers", files={"file": ("big.onnx", big)}, data={"spec": '{"name": "big"}'})
        assert r.status_code == 413
    assert stored_files(open_store(settings)) == []


def test_duplicate_teacher_name_is_a_conflict(client: Any, teacher_files: TeacherFiles) -> None:
    assert upload_teacher(client, teacher_files.digits_onnx, {"name": "same"}).status_code == 201
    r = upload_teacher(client, teacher_files.digits_onnx, {"name": "same"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_npz_dataset_upload_and_refusals(client: Any, session: Any, tmp_path: Path) -> None:
    path = npz_dataset_file(tmp_path / "tiny.npz")
    r = client.post("/v1/datasets", files={"file": ("tiny.npz", path.read_bytes())}, data={"spec": '{"name": "tiny"}'})
    assert r.status_code == 201, r.text
    d = r.json()
    assert (d["source"], d["input_shape"], d["num_samples"]) == ("npz", [1, 8, 8], 96)
    assert set(d["classes"]) == {"bright", "half"}
    assert client.get(f"/v1/datasets/{d['id']}").json() == d

    np.save(tmp_path / "one.npy", np.zeros(3))
    with zipfile.ZipFile(tmp_path / "nox.npz", "w") as z:
        z.writestr("y.npy", b"junk")
    cases = [
        (b"not a zip", '{"name": "a"}', 422, "not an .npz archive"),
        ((tmp_path / "nox.npz").read_bytes(), '{"name": "b"}', 422, "npz"),
        (path.read_bytes(), '{"name": "c", "labels": ["colour"]}', 422, "unknown label array 'colour'"),
        (path.read_bytes(), '{"name": "digits"}', 409, "reserved"),
        (path.read_bytes(), '{"name": "tiny"}', 409, "already exists"),
    ]
    for content, spec, status, message in cases:
        r = client.post("/v1/datasets", files={"file": ("d.npz", content)}, data={"spec": spec})
        assert r.status_code == status, r.text
        assert message in r.json()["detail"]
    assert session.scalar(select(func.count()).select_from(Dataset)) == 1
    assert session.scalar(select(func.count()).select_from(Artifact)) == 1


def test_missing_resources_and_bad_ids(client: Any) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for path in ("/v1/teachers", "/v1/datasets", "/v1/jobs", "/v1/factor-sets"):
        r = client.get(f"{path}/{missing}")
        assert r.status_code == 404 and "does not exist" in r.json()["detail"]
        # Factor sets are addressed by any reference (id, name, name:version, name@alias): an unknown one is a 404.
        assert client.get(f"{path}/not-a-uuid").status_code == (404 if path == "/v1/factor-sets" else 422)
        assert client.get(f"{path}?limit=0").status_code == 422
        assert client.get(f"{path}?limit=201").status_code == 422
    assert client.get("/v1/artifacts/" + "0" * 64).status_code == 404
    assert client.get("/v1/artifacts/../../etc/passwd").status_code == 404
    assert client.get("/v1/artifacts/xyz").status_code == 422


def _npz(**arrays: Any) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_refused_uploads_never_show_a_server_path(client: Any, migrated: Any, tmp_path: Path) -> None:
    import tempfile

    single = tmp_path / "one.npy"
    np.save(single, np.zeros(3))
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as z:
        z.writestr("x.npy", b"junk")
    x = np.zeros((8, 1, 4, 4), np.float32)
    datasets = {
        "a single .npy": single.read_bytes(),
        "an unreadable member": (tmp_path / "junk.npz").read_bytes(),
        "no x": _npz(y=np.zeros(8, np.int64)),
        "no labels": _npz(x=x),
        "labels of another length": _npz(x=x, y=np.zeros(5, np.int64)),
        "float labels": _npz(x=x, y=np.zeros(8, np.float32)),
        "x of a string dtype": _npz(x=np.array(["a"] * 8), y=np.zeros(8, np.int64)),
    }
    server_paths = [tempfile.gettempdir(), str(migrated.artifact_url), str(migrated.work_dir), ".tmp/", ".upload"]
    refused = []
    for what, content in datasets.items():
        r = client.post("/v1/datasets", files={"file": ("d.npz", content)}, data={"spec": '{"name": "d"}'})
        refused.append((what, r.status_code, r.json()["detail"]))
    for what, content in {"not a model": b"\x08\x01" * 40, "garbage": bytes(range(256))}.items():
        r = client.post("/v1/teachers", files={"file": ("t.onnx", content)}, data={"spec": '{"name": "t"}'})
        refused.append((what, r.status_code, r.json()["detail"]))
    for what, status, detail in refused:
        assert status == 422, (what, detail)
        assert not [p for p in server_paths if p in detail], (what, detail)
    assert any("'d.npz'" in detail for _, _, detail in refused)  # the file is named as the client named it
