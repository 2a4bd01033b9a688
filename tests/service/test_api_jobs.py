"""``POST /v1/jobs`` and friends, without running jobs: validation up front (acceptance 4), the stored recipe,
pagination, cancelling queued jobs, and the 503 when the queue is down."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from service.catalog.models import Job
from tests.factories import DSPRITES_HEADS, npz_dataset_file, tiny_job_body
from tests.service.helpers import DIGIT_GROUPS, TeacherFiles, upload_teacher

_MLP = {"ckn": {"name": "mlp"}, "tsn": {"name": "mlp"}, "feature_dim": 16}


def _jobs(session: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(Job)))


def test_submit_stores_the_resolved_recipe_and_queues_the_job(client: Any, digits_teacher: dict[str, Any]) -> None:
    body = tiny_job_body(digits_teacher["id"], name="my-factors", max_attempts=5)
    body["overrides"]["train"]["lr"] = 0.01
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["status"], job["stage"], job["factor_set_name"], job["max_attempts"]) == (
        "queued",
        "queued",
        "my-factors",
        5,
    )
    recipe = job["recipe"]
    assert recipe["train"]["lr"] == 0.01 and recipe["train"]["epochs"] == 1 and job["epochs"] == 1
    assert recipe["data"] == {**recipe["data"], "source": "digits", "samples": 200}
    assert [t["name"] for t in recipe["tasks"]] == ["low", "high"]  # the teacher's own tasks
    assert client.app.state.runner.enqueued == [uuid.UUID(job["id"])]
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]


def test_task_selection_by_name_and_by_object(client: Any, digits_teacher: dict[str, Any]) -> None:
    r = client.post("/v1/jobs", json=tiny_job_body(digits_teacher["id"], tasks=["high"]))
    assert r.status_code == 202, r.text
    assert [t["name"] for t in r.json()["recipe"]["tasks"]] == ["high"]
    odd = {"name": "odd", "output": "digit", "classes": [1, 3, 5, 7, 9]}
    r = client.post("/v1/jobs", json=tiny_job_body(digits_teacher["id"], tasks=["low", odd]))
    assert r.status_code == 202, r.text
    assert [t["name"] for t in r.json()["recipe"]["tasks"]] == ["low", "odd"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dataset": "cifar"}, "unknown built-in dataset 'cifar'"),
        ({"dataset": None}, "give exactly one of 'dataset'"),
        ({"tasks": ["middle"]}, "unknown task 'middle'; known tasks: high, low"),
        ({"tasks": [{"name": "c", "output": "colour"}]}, "unknown teacher output 'colour'"),
        (
            {"tasks": [{"name": "c", "output": "digit", "label": "colour"}]},
            "task 'c' reads the label column 'colour', which dataset 'digits' does not have; its label columns: digit",
        ),
        ({"tasks": []}, "no tasks given"),
        ({"recipe": "resnet-imagenet"}, "unknown recipe 'resnet-imagenet'"),
        ({"recipe": "/etc/passwd"}, "unknown recipe '/etc/passwd'"),
        ({"recipe": {"factor": _MLP, "train": {"epochs": 0}}}, "invalid training config value(s) for epochs"),
        ({"recipe": {"train": {"epochs": 1}}}, "recipe has no 'factor'"),
        ({"overrides": {"train": {"optimiser": "adam"}}}, "unknown training option(s) ['optimiser']"),
        ({"overrides": {"train": {"lr": -1}}}, "invalid training config value(s) for lr"),
        ({"overrides": {"data": {"path": "/etc/shadow"}}}, "overrides.data cannot set ['path']"),
        ({"overrides": {"samples": 5000}}, "samples=5000 but dataset 'digits' has only 1797"),
        ({"overrides": {"factor": {"ckn": {"name": "transformer"}}}}, "unknown architecture 'transformer'"),
        ({"overrides": {"factor": {"ckn": {"name": "mlp", "kwargs": {"depth": 3}}}}}, "factor.ckn"),
        ({"overrides": {"epochs": 0}}, "greater than or equal to 1"),
        (
            {"teacher_id": "00000000-0000-0000-0000-000000000000"},
            "teacher 00000000-0000-0000-0000-000000000000 does not",
        ),
        ({"max_attempts": 0}, "greater than or equal to 1"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_job_requests_get_a_clear_422_and_create_no_job(
    client: Any, session: Any, digits_teacher: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    body = {**tiny_job_body(digits_teacher["id"]), **change}
    if "overrides" in change:
        body["overrides"] = change["overrides"]
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert message in str(r.json()["detail"])
    assert _jobs(session) == 0
    assert client.app.state.runner.enqueued == []


def test_teacher_and_dataset_must_fit_each_other(client: Any, teacher_files: TeacherFiles, session: Any) -> None:
    dsprites = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "ds"}).json()
    r = client.post("/v1/jobs", json={"teacher_id": dsprites["id"], "dataset": "digits", "recipe": "dsprites"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert (
        "teacher 'ds' takes inputs of shape (1, 64, 64) (C, H, W) per sample but dataset 'digits' has (1, 8, 8)"
        in detail
    )
    r = client.post("/v1/jobs", json={"teacher_id": dsprites["id"], "dataset": "dsprites", "tasks": ["shape", "hue"]})
    assert r.status_code == 422 and "unknown task 'hue'" in r.json()["detail"]
    r = client.post("/v1/jobs", json={"teacher_id": dsprites["id"], "dataset": "dsprites"})
    assert r.status_code == 202, r.text
    assert [t["name"] for t in r.json()["recipe"]["tasks"]] == list(DSPRITES_HEADS)
    assert _jobs(session) == 1


def test_the_demo_job_trains_the_demo_recipe(client: Any, teacher_files: TeacherFiles) -> None:
    from kf_core import demo_recipe, get_recipe
    from service.cli.demo import job_request

    teacher = upload_teacher(client, teacher_files.dsprites_onnx, {"name": "demo"}).json()
    recipe = demo_recipe("dsprites", epochs=None, samples=None, seed=None)
    r = client.post("/v1/jobs", json=job_request(recipe, teacher["id"]))
    assert r.status_code == 202, r.text
    stored = r.json()["recipe"]
    want = recipe.to_json()
    assert want["train"] != get_recipe("dsprites").train.to_json()  # the demo's budget, not the server's recipe
    for part in ("data", "train", "factor", "tasks"):
        assert stored[part] == want[part], part


def test_jobs_on_an_uploaded_npz_dataset(client: Any, tmp_path: Path) -> None:
    path = npz_dataset_file(tmp_path / "tiny.npz")
    ds = client.post("/v1/datasets", files={"file": ("t.npz", path.read_bytes())}, data={"spec": '{"name": "tiny"}'})
    from tests.factories import onnx_teacher_file

    teacher_path = onnx_teacher_file(tmp_path / "bright.onnx", {"bright": 3, "half": 2})
    teacher = upload_teacher(client, teacher_path, {"name": "bright-half"}).json()
    body = {"teacher_id": teacher["id"], "dataset_id": ds.json()["id"]}
    # No recipe: the built-in one for the sample shape, (1, 8, 8) images too small for the conv nets -> digits.
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["recipe"]["name"] == "digits" and r.json()["recipe"]["factor"]["ckn"]["name"] == "mlp"
    assert r.json()["recipe"]["data"]["source"] == "npz"
    r = client.post("/v1/jobs", json={**body, "recipe": "digits", "overrides": {"data": {"test_fraction": 0.25}}})
    assert r.status_code == 202, r.text
    data = r.json()["recipe"]["data"]
    assert data["source"] == "npz" and data["path"] == "artifact:" + ds.json()["artifact"]["sha256"]
    assert data["test_fraction"] == 0.25
    assert [t["name"] for t in r.json()["recipe"]["tasks"]] == ["bright", "half"]  # one task per teacher output


def test_listing_is_paginated_and_filterable(client: Any, digits_teacher: dict[str, Any]) -> None:
    ids = [client.post("/v1/jobs", json=tiny_job_body(digits_teacher["id"])).json()["id"] for _ in range(5)]
    page = client.get("/v1/jobs?limit=2").json()
    assert page["count"] == 5 and [j["id"] for j in page["data"]] == ids[::-1][:2]  # newest first
    rest = client.get("/v1/jobs?offset=2&limit=10").json()
    assert [j["id"] for j in rest["data"]] == ids[::-1][2:]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    assert client.get("/v1/jobs?status=cancelled").json()["count"] == 1
    assert client.get("/v1/jobs?status=queued").json()["count"] == 4
    assert client.get("/v1/jobs?status=exploded").status_code == 422


def test_cancelling_a_queued_job(client: Any, digits_teacher: dict[str, Any]) -> None:
    job = client.post("/v1/jobs", json=tiny_job_body(digits_teacher["id"])).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["stage"]) == ("cancelled", "cancelled")
    assert r.json()["cancel_requested_at"] is not None and r.json()["finished_at"] is not None
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200  # idempotent
    assert client.post(f"/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404


def test_unreachable_queue_is_a_503_and_leaves_no_job(tmp_path: Path, teacher_files: TeacherFiles) -> None:
    from service.catalog.migrate import upgrade
    from service.jobs.runners import RqRunner
    from service.main import create_app
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path}/c.db", redis_url="redis://127.0.0.1:1/0")
    upgrade(settings)

    class NoRecovery(RqRunner):
        def start(self) -> None: ...  # no background recovery loop against the dead Redis

    from fastapi.testclient import TestClient

    with TestClient(create_app(settings, runner=NoRecovery)) as client:
        teacher = upload_teacher(client, teacher_files.digits_onnx, {"name": "t", "tasks": DIGIT_GROUPS}).json()
        r = client.post("/v1/jobs", json=tiny_job_body(teacher["id"]))
        assert r.status_code == 503, r.text
        assert "unreachable" in r.json()["detail"]
        assert client.get("/v1/jobs").json()["count"] == 0


@pytest.mark.parametrize(
    ("shape", "name"),
    [
        ([30], "tabular"),
        ([384], "tabular"),
        ([1, 8, 8], "digits"),
        ([3, 16, 32], "digits"),
        ([1, 64, 64], "dsprites"),
        ([3, 32, 48], "digits"),
        ([3, 64, 96], "dsprites"),
        ([2, 10, 10, 10], "digits"),
    ],
)
def test_the_default_recipe_for_uploaded_data_fits_the_sample_shape(shape: list[int], name: str) -> None:
    from kf_core import get_recipe
    from service.jobs.spec import default_recipe_name

    assert default_recipe_name(shape) == name
    factor = get_recipe(name).factor  # and its networks take that shape
    for spec in (factor.ckn, factor.tsn):
        spec.build(input_shape=shape, feature_dim=factor.feature_dim)
