"""Factor-set lifecycle over HTTP: extend a set with a new task against its frozen CKN (a real job), remove
tasks, import a run made elsewhere. New versions reuse the CKN and old parts by reference (same artifact rows),
and serving any subset of an extended set, old and new tasks mixed, equals the factor networks run one by one."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kf_core.ort import create_session
from service.cli.factor_sets import pack_run
from tests.conftest import make_settings, open_client
from tests.factories import exported_run_dir, tiny_job_body
from tests.service.helpers import DIGIT_GROUPS, Backend, TeacherFiles, upload_teacher, watch

pytestmark = pytest.mark.slow

TASKS = [*DIGIT_GROUPS, {"name": "odd", "output": "digit", "classes": [1, 3, 5, 7, 9]}]


@pytest.fixture
def api(tmp_path: Path) -> Any:
    from service.catalog.migrate import upgrade

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/catalog.db")
    upgrade(settings)
    with open_client(settings) as client:
        yield client, Backend("sqlite-inline", settings)


def _finish(client: Any, backend: Backend, job: dict[str, Any]) -> dict[str, Any]:
    final = watch(client, job["id"], timeout=120, backend=backend)[-1]
    assert final["status"] == "succeeded", final["error"]
    return final


def _download(client: Any, artifact: dict[str, Any]) -> bytes:
    r = client.get(artifact["url"])
    assert r.status_code == 200
    return bytes(r.content)


def test_extend_then_remove_reuses_parts_and_serves_every_subset_exactly(
    api: tuple[Any, Backend], teacher_files: TeacherFiles
) -> None:
    client, backend = api
    teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "digits-mlp", "tasks": TASKS}).json()
    r = client.post("/v1/jobs", json=tiny_job_body(teacher["id"], name="lego", tasks=["low", "high"]))
    assert r.status_code == 202, r.text
    v1 = client.get(f"/v1/factor-sets/{_finish(client, backend, r.json())['factor_set_id']}").json()

    # Bad extensions are refused before a job exists.
    assert client.post("/v1/factor-sets/lego/tasks", json={"tasks": ["low"]}).status_code == 422
    assert client.post("/v1/factor-sets/lego/tasks", json={"tasks": ["nope"]}).status_code == 422
    assert client.post("/v1/factor-sets/other/tasks", json={"tasks": ["odd"]}).status_code == 404
    r = client.post("/v1/factor-sets/lego/tasks", json={"tasks": ["odd"], "overrides": {"factor": {"ckn": {}}}})
    assert r.status_code == 422 and "frozen" in r.json()["detail"]

    other = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
    r = client.post("/v1/factor-sets/lego/tasks", json={"tasks": ["odd"], "teacher_id": other["id"]})
    assert r.status_code == 422, r.text  # another teacher is fine only if its input matches the set's
    r = client.post("/v1/factor-sets/lego:1/tasks", json={"tasks": ["odd"]})
    assert r.status_code == 202, r.text
    assert r.json()["recipe"]["extend"]["version"] == 1
    v2 = client.get(f"/v1/factor-sets/{_finish(client, backend, r.json())['factor_set_id']}").json()
    assert (v2["name"], v2["version"]) == ("lego", 2)
    assert [f["task"] for f in v2["factors"]] == ["low", "high", "odd"]
    assert v2["ckn_artifact"] == v1["ckn_artifact"]  # the same row: same id, same sha256, no copy
    for old, new in zip(v1["factors"], v2["factors"], strict=False):
        assert new["artifact"] == old["artifact"] and new["metrics"] == old["metrics"]
    assert v2["factors"][2]["artifact"]["id"] not in {f["artifact"]["id"] for f in v1["factors"]}
    assert set(v2["metrics"]["tasks"]) == {"low", "high", "odd"}
    assert v2["metrics"]["assembly"]["old_tasks_bitwise"] is True

    # Served subsets of v2 (old and new mixed) equal the factor networks run one by one from the stored parts.
    manifest = json.loads(_download(client, v2["manifest_artifact"]))
    assert manifest["ckn"]["sha256"] == v1["ckn_artifact"]["sha256"]
    ckn = create_session(_download(client, v2["ckn_artifact"]))
    parts = {f["task"]: create_session(_download(client, f["artifact"])) for f in v2["factors"]}
    x = np.random.default_rng(0).normal(0, 1, (6, 1, 8, 8)).astype(np.float32)
    (z_c,) = ckn.run(["z_c"], {"x": x})
    want = {n: s.run(["logits"], {"x": x, "z_c": z_c})[0] for n, s in parts.items()}
    for k in (1, 2, 3):
        for subset in itertools.combinations(want, k):
            body = {"factor_set": "lego:2", "tasks": list(subset), "inputs": x.tolist(), "logits": True}
            r = client.post("/v1/predict", json=body)
            assert r.status_code == 200, r.text
            for name in subset:
                got = np.asarray(r.json()["predictions"][name]["logits"], dtype=np.float32)
                np.testing.assert_allclose(got, want[name], atol=1e-5, rtol=0)
            r = client.post("/v1/assemblies", json={"factor_set": "lego:2", "tasks": list(subset)})
            assert r.status_code in (200, 201), r.text
    # The old tasks' served outputs are bitwise the same in v1 and v2.
    for name in ("low", "high"):
        outs = [
            client.post(
                "/v1/predict", json={"factor_set": f"lego:{v}", "tasks": [name], "inputs": x.tolist(), "logits": True}
            ).json()["predictions"][name]["logits"]
            for v in (1, 2)
        ]
        assert outs[0] == outs[1]

    # Remove a task: version 3, by reference only.
    assert client.post("/v1/factor-sets/lego/remove-tasks", json={"tasks": ["nope"]}).status_code == 422
    all_tasks = {"tasks": ["low", "high", "odd"]}
    assert client.post("/v1/factor-sets/lego/remove-tasks", json=all_tasks).status_code == 422
    r = client.post("/v1/factor-sets/lego:2/remove-tasks", json={"tasks": ["high"]})
    assert r.status_code == 201, r.text
    v3 = r.json()
    assert (v3["version"], [f["task"] for f in v3["factors"]]) == (3, ["low", "odd"])
    assert v3["ckn_artifact"] == v1["ckn_artifact"] and v3["report_artifact"] == v2["report_artifact"]
    assert [f["artifact"] for f in v3["factors"]] == [v2["factors"][0]["artifact"], v2["factors"][2]["artifact"]]
    assert v3["metrics"]["derived_from"]["version"] == 2
    body = {"factor_set": "lego:3", "tasks": ["low", "odd"], "inputs": x.tolist(), "logits": True}
    got = client.post("/v1/predict", json=body).json()["predictions"]
    for name in ("low", "odd"):
        np.testing.assert_allclose(np.asarray(got[name]["logits"], np.float32), want[name], atol=1e-5, rtol=0)
    r = client.post("/v1/predict", json={**body, "tasks": ["high"]})
    assert r.status_code in (404, 422)


def test_import_verifies_the_run_and_registers_it(
    api: tuple[Any, Backend], teacher_files: TeacherFiles, tmp_path: Path
) -> None:
    client, _ = api
    teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "digits-mlp", "tasks": TASKS}).json()
    run = tmp_path / "run"
    report = exported_run_dir(run)
    report["assembly"] = {"tasks": ["low", "high"], "max_abs_diff": 0.0, "samples_compared": 4}
    (run / "report.json").write_text(json.dumps(report))
    spec = {"name": "elsewhere", "teacher_id": teacher["id"], "dataset": "digits"}

    def post(archive: bytes, spec: dict[str, Any] = spec) -> Any:
        return client.post(
            "/v1/factor-sets/import", files={"file": ("run.tar", archive)}, data={"spec": json.dumps(spec)}
        )

    r = post(pack_run(run))
    assert r.status_code == 201, r.text
    fs = r.json()
    assert (fs["name"], fs["version"], [f["task"] for f in fs["factors"]]) == ("elsewhere", 1, ["low", "high"])
    manifest = json.loads((run / "parts" / "manifest.json").read_text())
    assert fs["ckn_artifact"]["sha256"] == manifest["ckn"]["sha256"]
    assert fs["metrics"]["imported"]["max_abs_diff"] <= 1e-5
    x = np.zeros((2, 1, 8, 8), np.float32).tolist()
    assert client.post("/v1/predict", json={"factor_set": "elsewhere", "inputs": x}).status_code == 200
    assert post(pack_run(run)).json()["version"] == 2  # importing again is the next version

    # A part altered after export, a report without the run's drift check, a wrong teacher, not a tar: 422.
    part = run / "parts" / manifest["tasks"]["low"]["file"]
    good = part.read_bytes()
    part.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    r = post(pack_run(run))
    assert r.status_code == 422 and "does not verify" in r.json()["detail"]
    assert str(tmp_path) not in r.json()["detail"]
    part.write_bytes(good)
    (run / "report.json").write_text(json.dumps({"tasks": {}}))
    assert post(pack_run(run)).status_code == 422
    (run / "report.json").write_text(json.dumps(report))
    other = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "dsprites-mlp"}).json()
    r = post(pack_run(run), {**spec, "teacher_id": other["id"]})
    assert r.status_code == 422 and "digit" in r.json()["detail"]
    assert post(b"not a tar archive").status_code == 422
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../escape.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    assert post(evil.getvalue()).status_code == 422
    assert not (tmp_path.parent / "escape.json").exists()


def test_extend_from_another_teacher_whose_input_matches(
    api: tuple[Any, Backend], teacher_files: TeacherFiles, tmp_path: Path
) -> None:
    from tests.factories import onnx_teacher_file

    client, backend = api
    teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "digits-mlp", "tasks": TASKS}).json()
    r = client.post("/v1/jobs", json=tiny_job_body(teacher["id"], name="lego", tasks=["low", "high"]))
    assert r.status_code == 202, r.text
    v1 = client.get(f"/v1/factor-sets/{_finish(client, backend, r.json())['factor_set_id']}").json()

    # A second teacher: the same 1x8x8 input, an output the first one does not have, labelled by "digit".
    twin = [{"name": "twin_high", "output": "twin", "classes": [5, 6, 7, 8, 9], "label": "digit"}]
    other_file = onnx_teacher_file(tmp_path / "twin.onnx", {"twin": 10}, names=["twin", "feat_0"])
    other = upload_teacher(client, other_file, {"name": "twin-mlp", "tasks": twin}).json()
    assert client.post("/v1/factor-sets/lego/tasks", json={"tasks": ["twin_high"]}).status_code == 422
    r = client.post("/v1/factor-sets/lego:1/tasks", json={"tasks": ["twin_high"], "teacher_id": other["id"]})
    assert r.status_code == 202, r.text
    assert r.json()["teacher_id"] == other["id"]
    v2 = client.get(f"/v1/factor-sets/{_finish(client, backend, r.json())['factor_set_id']}").json()

    assert (v2["name"], v2["version"], v2["teacher_id"]) == ("lego", 2, other["id"])
    assert [(f["task"], f["output"]) for f in v2["factors"]] == [
        ("low", "digit"),
        ("high", "digit"),
        ("twin_high", "twin"),
    ]
    assert v2["ckn_artifact"] == v1["ckn_artifact"]  # the same row: same id, same sha256, no copy
    assert [f["artifact"] for f in v2["factors"][:2]] == [f["artifact"] for f in v1["factors"]]
    assert v2["metrics"]["assembly"]["old_tasks_bitwise"] is True
    assert set(v2["metrics"]["tasks"]) == {"low", "high", "twin_high"}

    x = np.random.default_rng(1).normal(0, 1, (4, 1, 8, 8)).astype(np.float32)
    ckn = create_session(_download(client, v2["ckn_artifact"]))
    (z_c,) = ckn.run(["z_c"], {"x": x})
    body = {"factor_set": "lego:2", "tasks": ["low", "twin_high"], "inputs": x.tolist(), "logits": True}
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    for f in v2["factors"]:
        if f["task"] in body["tasks"]:
            (want,) = create_session(_download(client, f["artifact"])).run(["logits"], {"x": x, "z_c": z_c})
            got = np.asarray(r.json()["predictions"][f["task"]]["logits"], np.float32)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.asarray(r.json()["predictions"]["twin_high"]["logits"]).shape == (4, 5)
