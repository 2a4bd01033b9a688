"""Serving over HTTP: /v1/assemblies, /v1/predict and the Open Inference Protocol v2, on SQLite and PostgreSQL.

The factor set is a real small factorization (tests/service/serving.py); predictions are compared with the torch
factor networks themselves.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from kf_core import load_parts
from kf_core.ort import available_providers, create_session
from service.catalog.models import Assembly
from tests.conftest import open_client
from tests.service.helpers import corrupt_artifact
from tests.service.serving import TASKS, Trained, register, subsets, train_small_factor_set

TOL = 1e-5
HAS_CUDA = "CUDAExecutionProvider" in available_providers()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_small_factor_set(tmp_path_factory.mktemp("factorized"))


@pytest.fixture
def registered(trained: Trained, session: Any, job: Any, factory: Any, store: Any) -> Any:
    return register(trained, session=session, job=job, factory=factory, store=store)


@pytest.fixture
def api(registered: Any, migrated: Any) -> Iterator[Any]:  # noqa: ARG001 (the factor set must exist first)
    with open_client(migrated, run_jobs=False) as c:
        yield c


def _predict(api: Any, x: np.ndarray, tasks: list[str] | None, **extra: Any) -> Any:
    body: dict[str, Any] = {"factor_set": "fs", "inputs": x.tolist(), "logits": True, **extra}
    if tasks is not None:
        body["tasks"] = tasks
    return api.post("/v1/predict", json=body)


def _infer(api: Any, x: np.ndarray, outputs: list[str] | None = None, model: str = "fs", **extra: Any) -> Any:
    body: dict[str, Any] = {
        "id": "req-1",
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
        **extra,
    }
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return api.post(f"/v2/models/{model}/infer", json=body)


# ------------------------------------------------------------------------------------------------ acceptance 1
def test_every_task_subset_predicts_exactly_what_the_factor_networks_compute(api: Any, trained: Trained) -> None:
    want = trained.logits()
    for subset in subsets():
        r = _predict(api, trained.x, list(subset))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tasks"] == list(subset)
        assert set(body["predictions"]) == set(subset)
        for task in subset:
            got = body["predictions"][task]
            logits = np.asarray(got["logits"])
            assert np.abs(logits - want[task]).max() <= TOL, (subset, task)
            assert got["labels"] == want[task].argmax(axis=1).tolist()
            p = np.asarray(got["probabilities"])
            np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
            assert got["labels"] == p.argmax(axis=1).tolist()
        v2 = _infer(api, trained.x, [f"logits_{t}" for t in subset])
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        for task in subset:
            o = outputs[f"logits_{task}"]
            assert o["datatype"] == "FP32" and o["shape"] == list(want[task].shape)
            assert np.abs(np.asarray(o["data"]).reshape(o["shape"]) - want[task]).max() <= TOL, (subset, task)
    stats = api.app.state.runtime.stats
    assert (stats.compositions, stats.resident_loads) == (0, 1)  # 62 requests, 31 subsets: every part loaded once
    assert stats.parts.ckn_runs == sum(stats.batch_rows.values()) and stats.parts.ckn_rows == 62 * len(trained.x)
    for task in TASKS:  # each task part ran over exactly the rows of the 16 subsets x 2 protocols that hold it
        assert stats.parts.task_rows[task] == 32 * len(trained.x)


def test_serving_a_subset_writes_nothing_to_the_catalog(api: Any, trained: Trained, session: Any) -> None:
    for subset in (["shape"], ["scale", "pos_y"], list(TASKS)):
        assert _predict(api, trained.x, subset).json()["assembly_id"] is None
    assert session.scalar(select(func.count()).select_from(Assembly)) == 0
    runtime = api.app.state.runtime
    assert runtime.entries() == []  # no fused session either
    (resident,) = runtime.resident_sets()
    assert runtime.cache_bytes == resident.size_bytes  # each part counted once, whatever the subsets


def test_disjoint_subsets_in_one_batch_share_one_ckn_run_and_equal_the_fused_graph(api: Any, trained: Trained) -> None:
    runtime = api.app.state.runtime
    first, second = ["shape", "scale"], ["orientation", "pos_x", "pos_y"]
    x1, x2 = trained.x[:3], trained.x[3:8]

    async def one_batch() -> tuple[list[Any], list[Any]]:
        resident, route1 = await runtime.route("fs", first)
        _, route2 = await runtime.route("fs", second)
        # Both submitted before the queue's drain task first runs: one batch of 8 rows, two subsets.
        a, b = await asyncio.gather(runtime.run(resident, route1, x1), runtime.run(resident, route2, x2))
        return a, b

    before = copy.deepcopy(runtime.stats.parts)
    got1, got2 = api.portal.call(one_batch)
    after = runtime.stats.parts
    assert (after.ckn_runs - before.ckn_runs, after.ckn_requests - before.ckn_requests) == (1, 2)
    assert after.ckn_rows - before.ckn_rows == 8
    for task in first:
        assert after.task_rows[task] - before.task_rows.get(task, 0) == 3
    for task in second:
        assert after.task_rows[task] - before.task_rows.get(task, 0) == 5
    metrics = api.get("/metrics").text
    assert f"kf_ckn_runs_total {float(after.ckn_runs)}" in metrics
    assert f'kf_task_part_rows_total{{task="pos_x"}} {float(after.task_rows["pos_x"])}' in metrics

    want = trained.logits()
    for tasks, rows, got in ((first, slice(0, 3), got1), (second, slice(3, 8), got2)):
        a = api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": tasks}).json()
        fused = create_session(api.get(a["onnx_url"]).content)
        names = [n for t in tasks for n in (f"logits_{t}", f"probs_{t}")]
        reference = fused.run(names, {"x": trained.x[rows]})
        assert len(got) == len(names)
        for name, served, ref in zip(names, got, reference, strict=True):
            assert np.abs(served - ref).max() <= TOL, name
            if name.startswith("logits_"):
                assert np.abs(served - want[name.removeprefix("logits_")][rows]).max() <= TOL, name


def test_overlapping_single_row_requests_in_one_batch_get_their_own_rows(api: Any, trained: Trained) -> None:
    """Batch-1 requests for overlapping subsets in one batch: each task part runs over the rows that asked for it
    (gathered by row), its softmax once over them, and every request gets its own row's outputs back."""
    runtime = api.app.state.runtime
    asks = [["shape"], ["shape", "scale"], ["scale", "pos_x"], ["pos_y"], ["shape", "pos_y"]]

    async def one_batch() -> list[Any]:
        routes = [await runtime.route("fs", tasks) for tasks in asks]
        return await asyncio.gather(
            *(runtime.run(resident, route, trained.x[i : i + 1]) for i, (resident, route) in enumerate(routes))
        )

    before = copy.deepcopy(runtime.stats.parts)
    answers = api.portal.call(one_batch)
    after = runtime.stats.parts
    assert (after.ckn_runs - before.ckn_runs, after.ckn_rows - before.ckn_rows) == (1, len(asks))
    assert after.task_rows["shape"] - before.task_rows.get("shape", 0) == 3
    want = trained.logits()
    for i, (tasks, got) in enumerate(zip(asks, answers, strict=True)):
        assert len(got) == 2 * len(tasks)
        for t, (logits, probs) in zip(tasks, zip(got[::2], got[1::2], strict=True), strict=True):
            assert logits.shape == probs.shape == (1, want[t].shape[1])
            assert np.abs(logits - want[t][i : i + 1]).max() <= TOL, (i, t)
            e = np.exp(want[t][i] - want[t][i].max())
            assert np.abs(probs[0] - e / e.sum()).max() <= TOL, (i, t)


def test_a_lone_row_runs_without_the_batch_bookkeeping_and_gets_what_a_batch_would(api: Any, trained: Trained) -> None:
    """A batch of one row for one request (a lone client's) runs with the feeds its route holds ready: every subset
    gets the outputs the general path gives the same row in a batch of two, and the part counters move alike."""
    runtime = api.app.state.runtime
    x1 = trained.x[:1]
    for subset in subsets():
        resident, route = api.portal.call(runtime.route, "fs", list(subset))
        before = copy.deepcopy(resident.stats)
        (alone,) = resident.run(x1, [(0, 1, route)])
        middle = copy.deepcopy(resident.stats)
        in_batch = resident.run(np.concatenate([x1, x1]), [(0, 1, route), (1, 2, route)])[0]
        assert len(alone) == len(in_batch) == 2 * len(subset)
        for a, b in zip(alone, in_batch, strict=True):
            assert a.shape == b.shape == (1, a.shape[1])
            np.testing.assert_array_equal(a, b)
        assert (middle.ckn_runs - before.ckn_runs, middle.ckn_rows - before.ckn_rows) == (1, 1)
        for t in TASKS:
            ran = t in subset
            assert middle.task_rows.get(t, 0) - before.task_rows.get(t, 0) == ran, (subset, t)
            assert resident.stats.task_rows.get(t, 0) - middle.task_rows.get(t, 0) == 2 * ran, (subset, t)


def test_v2_infer_without_outputs_returns_every_task_and_echoes_the_id(api: Any, trained: Trained) -> None:
    r = _infer(api, trained.x)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("fs", "1", "req-1")
    names = [o["name"] for o in body["outputs"]]
    assert names == [f"{k}_{t}" for t in TASKS for k in ("logits", "probs", "label")]
    want = trained.logits()
    labels = {o["name"]: o for o in body["outputs"] if o["name"].startswith("label_")}
    for t in TASKS:
        assert labels[f"label_{t}"]["datatype"] == "INT64"
        assert labels[f"label_{t}"]["data"] == want[t].argmax(axis=1).tolist()


def test_base64_npy_inputs_equal_nested_lists(api: Any, trained: Trained) -> None:
    buf = io.BytesIO()
    np.save(buf, trained.x)
    as_npy = api.post(
        "/v1/predict",
        json={"factor_set": "fs:1", "inputs": base64.b64encode(buf.getvalue()).decode(), "logits": True},
    )
    as_lists = _predict(api, trained.x, None)
    assert as_npy.status_code == as_lists.status_code == 200
    assert as_npy.json()["predictions"] == as_lists.json()["predictions"]
    assert as_npy.json()["tasks"] == list(TASKS)  # no tasks: all of them


def test_factor_set_is_addressed_by_id_name_and_name_version(api: Any, registered: Any) -> None:
    for ref in (str(registered.id), "fs", "fs:1"):
        r = api.post("/v1/assemblies", json={"factor_set": ref, "tasks": ["scale", "shape"]})
        assert r.status_code == 200, r.text
        assert r.json()["factor_set"] == {"id": str(registered.id), "name": "fs", "version": 1}
        assert r.json()["tasks"] == ["shape", "scale"]  # the factor set's order
    assert api.post("/v1/assemblies", json={"factor_set": "fs:2", "tasks": ["shape"]}).status_code == 404


# ------------------------------------------------------------------------------------------------ assemblies
def test_assembly_reports_its_spec_and_its_graph_downloads_verified(api: Any, trained: Trained) -> None:
    r = api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["pos_x", "shape"]})
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["cache"], a["source"], a["provider"]) == ("miss", "composed", "CPUExecutionProvider")
    assert a["input"] == {"name": "x", "datatype": "FP32", "shape": [-1, 1, 64, 64]}
    assert [(o["name"], o["shape"]) for o in a["outputs"]] == [
        ("logits_shape", [-1, 3]),
        ("probs_shape", [-1, 3]),
        ("logits_pos_x", [-1, 32]),
        ("probs_pos_x", [-1, 32]),
    ]
    assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["shape", "pos_x"]}).json()["cache"] == "hit"
    assert api.get(f"/v1/assemblies/{a['id']}").json()["graph_sha256"] == a["graph_sha256"]

    graph = api.get(a["onnx_url"])
    assert graph.status_code == 200
    assert hashlib.sha256(graph.content).hexdigest() == a["graph_sha256"] == graph.headers["x-content-sha256"]

    out = create_session(graph.content).run(["logits_shape", "logits_pos_x"], {"x": trained.x})
    want = trained.logits()
    assert np.abs(out[0] - want["shape"]).max() <= TOL and np.abs(out[1] - want["pos_x"]).max() <= TOL


def test_unknown_assembly_is_404(api: Any) -> None:
    r = api.get("/v1/assemblies/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404 and "assembly" in r.json()["detail"]


# ------------------------------------------------------------------------------------------------ acceptance 2
def test_fifty_concurrent_requests_for_a_new_subset_compose_it_once(api: Any, session: Any) -> None:
    barrier = threading.Barrier(50)

    def request(_: int) -> Any:
        barrier.wait()
        return api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["orientation", "pos_y", "scale"]})

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(request, range(50)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    states = [r.json()["cache"] for r in responses]
    assert states.count("miss") == 1, states
    assert len({r.json()["id"] for r in responses}) == 1
    assert api.app.state.runtime.stats.compositions == 1
    assert session.scalar(select(func.count()).select_from(Assembly)) == 1
    metrics = api.get("/metrics").text
    assert "kf_assembly_compositions_total 1.0" in metrics


def test_concurrent_predictions_share_batches_and_each_gets_its_own_rows(api: Any, trained: Trained) -> None:
    want = trained.logits()
    assert _predict(api, trained.x[:1], ["shape"]).status_code == 200  # built and cached
    barrier = threading.Barrier(16)

    def request(i: int) -> tuple[int, Any]:
        barrier.wait()
        return i, _predict(api, trained.x[i % 8 : i % 8 + 1], ["shape"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(request, range(16)))
    for i, r in results:
        assert r.status_code == 200, r.text
        assert np.abs(np.asarray(r.json()["predictions"]["shape"]["logits"]) - want["shape"][i % 8]).max() <= TOL
    stats = api.app.state.runtime.stats
    assert sum(stats.batch_rows.values()) < 17  # 17 requests, fewer session runs: some were batched together


# ------------------------------------------------------------------------------------------------ cache and storage
def test_a_restarted_server_loads_the_stored_graph_instead_of_composing(
    api: Any, migrated: Any, trained: Trained
) -> None:
    first = api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["scale"]}).json()
    with open_client(migrated, run_jobs=False) as fresh:  # a second replica / a restart: same catalog and store
        again = fresh.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["scale"]}).json()
        assert (again["cache"], again["source"], again["id"]) == ("miss", "stored", first["id"])
        assert (fresh.app.state.runtime.stats.compositions, fresh.app.state.runtime.stats.loads) == (0, 1)
        r = _predict(fresh, trained.x, ["scale"])
        assert np.abs(np.asarray(r.json()["predictions"]["scale"]["logits"]) - trained.logits()["scale"]).max() <= TOL


def test_a_corrupted_stored_graph_is_refused_and_rebuilt_from_the_parts(
    api: Any, migrated: Any, store: Any, trained: Trained
) -> None:
    first = api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["pos_x"]}).json()

    def flip(data: bytes) -> bytes:
        middle = len(data) // 2
        return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]

    corrupt_artifact(store, first["graph_sha256"], flip)
    assert api.get(first["onnx_url"]).status_code == 500  # never served as is
    with open_client(migrated, run_jobs=False) as fresh:
        r = fresh.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["pos_x"]})
        assert r.status_code == 200, r.text
        out = create_session(fresh.get(first["onnx_url"]).content).run(["logits_pos_x"], {"x": trained.x})[0]
        assert np.abs(out - trained.logits()["pos_x"]).max() <= TOL
        stats = fresh.app.state.runtime.stats
        assert (stats.rebuilds, stats.compositions, stats.loads) == (1, 1, 0)
    store.verify(first["graph_sha256"])  # the good bytes replaced the damaged file
    assert api.get(first["onnx_url"]).status_code == 200


@pytest.mark.usefixtures("registered")
def test_the_cache_evicts_least_recently_used_assemblies_within_its_budget(migrated: Any) -> None:
    with open_client(migrated, run_jobs=False) as probe:
        one = probe.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["shape"]}).json()["size_bytes"]
    settings = migrated.model_copy(update={"cache_bytes": int(one * 2.5)})
    with open_client(settings, run_jobs=False) as api:
        runtime = api.app.state.runtime
        for task in ("shape", "scale", "orientation"):
            assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": [task]}).status_code == 200
        assert runtime.stats.evictions >= 1
        assert runtime.cache_bytes <= settings.cache_bytes
        cached = [e.tasks for e in runtime.entries()]
        assert ("shape",) not in cached and ("orientation",) in cached  # the oldest went first
        assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["shape"]}).json()["cache"] == "miss"
        assert "kf_assembly_cache_evictions_total" in api.get("/metrics").text


@pytest.mark.usefixtures("registered")
def test_pinned_assemblies_are_warm_before_the_server_is_ready(migrated: Any) -> None:
    settings = migrated.model_copy(update={"pin": "fs=shape,scale;fs:1"})
    with open_client(settings, run_jobs=False) as api:
        runtime = api.app.state.runtime
        deadline = 100
        while api.get("/v2/health/ready").status_code != 200 and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        assert api.get("/v2/health/ready").json() == {"ready": True}
        assert [r.factor_set.name for r in runtime.resident_sets()] == ["fs"]  # both pins name one factor set
        assert runtime.stats.resident_loads == 1


@pytest.mark.usefixtures("registered")
def test_a_pin_that_cannot_be_built_keeps_the_server_not_ready(migrated: Any) -> None:
    settings = migrated.model_copy(update={"pin": "no-such-set"})
    with open_client(settings, run_jobs=False) as api:
        threading.Event().wait(0.3)
        r = api.get("/v2/health/ready")
        assert (r.status_code, r.json()) == (503, {"ready": False})
        assert api.get("/v2/health/live").json() == {"live": True}


# ------------------------------------------------------------------------------------------------ v2 metadata
def test_v2_server_and_model_metadata(api: Any) -> None:
    assert api.get("/v2").json()["name"] == "kf-service"
    assert api.get("/v2/health/live").json() == {"live": True}
    assert api.get("/v2/health/ready").json() == {"ready": True}
    meta = api.get("/v2/models/fs").json()
    assert (meta["name"], meta["versions"], meta["platform"]) == ("fs", ["1"], "onnxruntime_onnx")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 64, 64]}]
    assert {"name": "probs_pos_y", "datatype": "FP32", "shape": [-1, 32]} in meta["outputs"]
    assert {"name": "label_shape", "datatype": "INT64", "shape": [-1]} in meta["outputs"]
    assert len(meta["outputs"]) == 15
    assert api.get("/v2/models/fs/versions/1").json()["outputs"] == meta["outputs"]
    assert api.get("/v2/models/fs/ready").json() == {"name": "fs", "ready": True}
    assert api.get("/v2/models/fs/versions/1/ready").json() == {"name": "fs", "ready": True}
    assert api.get("/v2/models/fs/versions/7/ready").status_code == 404


# ------------------------------------------------------------------------------------------------ acceptance 4
def _v1_error(r: Any, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    text = r.text.lower()
    assert all(w.lower() in text for w in words), (words, r.text)


def _v2_error(r: Any, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"], body  # the protocol's error shape
    assert all(w.lower() in body["error"].lower() for w in words), (words, body)


def test_bad_v1_requests_are_4xx_naming_the_problem(api: Any, trained: Trained) -> None:
    x = trained.x[:2]
    _v1_error(_predict(api, x[:, :, :32], ["shape"]), 422, "shape", "(N, 1, 64, 64)")
    _v1_error(_predict(api, x[0], ["shape"]), 422, "shape")
    _v1_error(api.post("/v1/predict", json={"factor_set": "fs", "inputs": [["a"]]}), 422, "numbers")
    _v1_error(api.post("/v1/predict", json={"factor_set": "fs", "inputs": [[1, 2], [3]]}), 422, "rectangular")
    nan = x.copy()
    nan[0, 0, 0, 0] = np.nan
    body = '{"factor_set": "fs", "inputs": ' + str(nan.tolist()).replace("nan", "NaN") + "}"
    _v1_error(api.post("/v1/predict", content=body, headers={"content-type": "application/json"}), 422, "NaN")
    _v1_error(_predict(api, x, ["colour"]), 422, "colour", "shape")
    _v1_error(_predict(api, x, []), 422, "at least one")
    _v1_error(_predict(api, x, ["shape", "shape"]), 422, "twice")
    _v1_error(api.post("/v1/predict", json={"factor_set": "nope", "inputs": x.tolist()}), 404, "nope")
    _v1_error(api.post("/v1/predict", json={"factor_set": "fs", "inputs": []}), 422, "shape")
    _v1_error(_predict(api, np.zeros((0, 1, 64, 64), np.float32), None), 422, "shape")
    _v1_error(_predict(api, np.zeros((65, 1, 64, 64), np.float32), ["shape"]), 422, "65", "KF_MAX_BATCH")
    _v1_error(api.post("/v1/predict", json={"factor_set": "fs", "inputs": "not base64!"}), 422, "base64")
    _v1_error(
        api.post("/v1/predict", json={"factor_set": "fs", "inputs": base64.b64encode(b"xx").decode()}), 422, "npy"
    )
    bad = api.post(
        "/v1/predict", content=b'{"factor_set": "fs", "inputs": [', headers={"content-type": "application/json"}
    )
    _v1_error(bad, 422, "json")
    _v1_error(api.post("/v1/predict", json={"factor_set": "fs", "inputs": [], "typo": 1}), 422, "typo")
    _v1_error(
        api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["shape", "scale"], "combined": True}),
        422,
        "one teacher output",
    )


def test_bad_v2_requests_are_400_in_the_protocols_error_format(api: Any, trained: Trained) -> None:
    x = trained.x[:2]
    tensor = {"name": "x", "shape": [2, 1, 64, 64], "datatype": "FP32", "data": x.ravel().tolist()}

    def infer(**changes: Any) -> Any:
        return api.post("/v2/models/fs/infer", json={"inputs": [tensor | changes]})

    _v2_error(infer(shape=[2, 1, 32, 64]), 400, "shape", "[-1, 1, 64, 64]")
    _v2_error(infer(shape=[3, 1, 64, 64]), 400, "12288", "8192")
    _v2_error(infer(datatype="FP64"), 400, "datatype", "FP32")
    _v2_error(infer(datatype="BYTES", data=["a"] * 8192), 400, "FP32")
    _v2_error(infer(data=["a"] * 8192), 400, "numbers")
    _v2_error(infer(name="image"), 400, "image", "'x'")
    nan = tensor | {"data": [float("nan"), *tensor["data"][1:]]}
    raw = str({"inputs": [nan]}).replace("'", '"').replace("nan", "NaN")
    _v2_error(api.post("/v2/models/fs/infer", content=raw, headers={"content-type": "application/json"}), 400, "NaN")
    _v2_error(_infer(api, x, ["logits_colour"]), 400, "logits_colour", "logits_shape")
    _v2_error(_infer(api, x, ["probs_shape", "probs_shape"]), 400, "twice")
    _v2_error(_infer(api, x, model="nope"), 404, "nope")
    _v2_error(api.get("/v2/models/nope"), 404, "nope")
    _v2_error(api.post("/v2/models/fs/infer", json={"inputs": []}), 400, "inputs")
    _v2_error(infer(shape=[0, 1, 64, 64], data=[]), 400, "empty")
    big = np.zeros((65, 1, 64, 64), np.float32)
    _v2_error(_infer(api, big), 400, "65", "KF_MAX_BATCH")
    malformed = api.post("/v2/models/fs/infer", content=b'{"inputs": [', headers={"content-type": "application/json"})
    _v2_error(malformed, 400, "json")
    _v2_error(api.post("/v2/models/fs/infer", json={"inputs": [tensor], "outputs": [{"nam": "x"}]}), 400, "name")


# ------------------------------------------------------------------------------------------------ acceptance 5
def test_auto_serves_on_the_cpu_and_says_so_in_metadata_and_metrics(api: Any) -> None:
    from kf_core.ort import available_providers

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this ONNX Runtime offers CUDA; tests/service/test_providers.py covers the fallback")
    meta = api.get("/v2/models/fs").json()
    assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
    assert meta["parameters"]["device"] == "cpu"
    assert 'kf_execution_provider_info{device="cpu",provider="CPUExecutionProvider"} 1.0' in api.get("/metrics").text
    assert api.get("/v1/health").json()["provider"] == "CPUExecutionProvider"


def test_kf_device_cuda_refuses_to_start_without_cuda(migrated: Any) -> None:
    from kf_core.ort import available_providers
    from service.errors import DeviceUnavailableError

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("CUDA is offered here; the refusal is tested where it is not")
    settings = migrated.model_copy(update={"device": "cuda"})
    with pytest.raises(DeviceUnavailableError, match=r"KF_DEVICE=cuda.*kf-service\[gpu\]"), open_client(settings):
        pass


def test_npy_inputs_of_every_layout_and_dtype_decode_exactly() -> None:
    from service.serving.v1 import decode_inputs

    rng = np.random.default_rng(0)
    arrays = [
        rng.random((2, 1, 4, 4)).astype(np.float32),
        rng.random((1, 1, 3, 5)),  # float64
        np.asfortranarray(rng.random((2, 1, 3, 3)).astype(np.float32)),
        rng.integers(0, 255, (1, 1, 2, 2)).astype(np.uint8),
        rng.random((3,)).astype(">f4"),  # big-endian
        np.zeros((0, 1, 2, 2), np.float32),
    ]
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, a)
        got = decode_inputs(base64.b64encode(buf.getvalue()).decode())
        assert got.dtype == a.dtype and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
    from kf_core.errors import DataError
    from kf_core.predict import check_batch

    buf = io.BytesIO()
    np.save(buf, np.array([["a", "b"]]))  # not numbers: decoded by numpy's reader, refused by the batch check
    with pytest.raises(DataError, match="must be numbers"):
        check_batch(decode_inputs(base64.b64encode(buf.getvalue()).decode()), [None, 2])
    truncated = io.BytesIO()
    np.save(truncated, np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(Exception, match="data holds"):
        decode_inputs(base64.b64encode(truncated.getvalue()[:-8]).decode())


# ------------------------------------------------------------------------------------------------ binary tensors
def _binary_request(x: np.ndarray, outputs: list[dict[str, Any]], **parameters: Any) -> tuple[bytes, dict[str, str]]:
    """A request in the binary tensor extension's layout: JSON header, then the input's raw little-endian bytes."""
    import json

    blob = x.astype("<f4").tobytes()
    header = {
        "id": "bin-1",
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(blob)}}
        ],
        "outputs": outputs,
    }
    if parameters:
        header["parameters"] = parameters
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}
    return head + blob, headers


def test_v2_binary_tensor_extension_in_and_out(api: Any, trained: Trained) -> None:
    import json

    assert "binary_tensor_data" in api.get("/v2").json()["extensions"]
    want = trained.logits()
    outputs = [{"name": "logits_pos_x", "parameters": {"binary_data": True}}, {"name": "label_shape"}]
    body, headers = _binary_request(trained.x, outputs)
    r = api.post("/v2/models/fs/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    assert head["id"] == "bin-1"
    logits, label = head["outputs"]
    assert logits["parameters"]["binary_data_size"] == 4 * 8 * 32 and "data" not in logits
    got = np.frombuffer(r.content[n:], dtype="<f4").reshape(logits["shape"])
    assert np.abs(got - want["pos_x"]).max() <= TOL
    assert label["data"] == want["shape"].argmax(axis=1).tolist()  # not asked as binary: JSON

    body, headers = _binary_request(trained.x, [{"name": "label_scale"}], binary_data_output=True)
    r = api.post("/v2/models/fs/infer", content=body, headers=headers)
    n = int(r.headers["inference-header-content-length"])
    labels = np.frombuffer(r.content[n:], dtype="<i8")
    assert labels.tolist() == want["scale"].argmax(axis=1).tolist()

    body, headers = _binary_request(trained.x, [{"name": "probs_shape"}])  # binary in, JSON out
    r = api.post("/v2/models/fs/infer", content=body, headers=headers)
    assert r.headers["content-type"].startswith("application/json")
    assert np.asarray(r.json()["outputs"][0]["data"]).reshape(8, 3).sum(axis=1) == pytest.approx(1.0, abs=1e-5)


def test_bad_binary_requests_are_400s(api: Any, trained: Trained) -> None:
    body, headers = _binary_request(trained.x, [{"name": "label_shape"}])
    r = api.post("/v2/models/fs/infer", content=body[:-4], headers=headers)  # truncated tensor bytes
    _v2_error(r, 400, "binary_data_size", "bytes")
    bad = dict(headers, **{"Inference-Header-Content-Length": str(len(body) + 10)})
    _v2_error(api.post("/v2/models/fs/infer", content=body, headers=bad), 400, "Inference-Header-Content-Length")
    bad = dict(headers, **{"Inference-Header-Content-Length": "abc"})
    _v2_error(api.post("/v2/models/fs/infer", content=body, headers=bad), 400, "Inference-Header-Content-Length")
    bad = dict(headers, **{"Inference-Header-Content-Length": "5"})
    _v2_error(api.post("/v2/models/fs/infer", content=body, headers=bad), 400, "json")
    tensor = {"name": "x", "shape": [1, 1, 64, 64], "datatype": "FP32"}
    _v2_error(api.post("/v2/models/fs/infer", json={"inputs": [tensor]}), 400, "no data")


def test_the_device_row_gather_picks_rows_of_x_and_z_c() -> None:
    from service.serving.resident import _gather_graph

    x = np.arange(5 * 2 * 3 * 3, dtype=np.float32).reshape(5, 2, 3, 3)
    z = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    rows = np.array([4, 0, 2], dtype=np.int64)
    xs, zs = create_session(_gather_graph(4)).run(["x_rows", "z_rows"], {"x": x, "z_c": z, "rows": rows})
    assert np.array_equal(xs, x[rows]) and np.array_equal(zs, z[rows])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_on_cuda_mixed_subsets_keep_x_and_z_c_on_the_device_and_equal_the_factor_networks(
    api: Any, trained: Trained
) -> None:
    runtime = api.app.state.runtime  # KF_DEVICE=auto: CUDA on a GPU machine

    async def mixed() -> tuple[Any, list[list[np.ndarray]]]:
        resident, route1 = await runtime.route("fs", ["shape", "scale"])
        _, route2 = await runtime.route("fs", ["orientation", "pos_x"])
        _, route3 = await runtime.route("fs", list(TASKS))
        spans = [(0, 2, route1), (2, 5, route2), (5, 8, route3)]
        return resident, resident.run(trained.x[:8], spans)

    resident, outputs = api.portal.call(mixed)
    assert (resident.device, resident.provider) == ("cuda", "CUDAExecutionProvider")
    want = trained.logits()
    for (start, stop, tasks), got in zip(
        [(0, 2, ("shape", "scale")), (2, 5, ("orientation", "pos_x")), (5, 8, TASKS)], outputs, strict=True
    ):
        for i, task in enumerate(tasks):
            # cuDNN's convolutions round differently from the CPU's: 1e-4 on logits of order 10.
            assert np.abs(got[2 * i] - want[task][start:stop]).max() <= 1e-4, task


@pytest.mark.usefixtures("registered")
def test_a_resident_factor_set_is_evicted_whole_within_the_budget_unless_pinned(
    migrated: Any, trained: Trained
) -> None:
    settings = migrated.model_copy(update={"cache_bytes": 1})
    with open_client(settings, run_jobs=False) as api:
        runtime = api.app.state.runtime
        assert _predict(api, trained.x[:1], ["shape"]).status_code == 200
        assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["scale"]}).status_code == 200
        assert (runtime.resident_sets(), runtime.stats.evictions) == ([], 1)  # the fused session pushed it out
        assert _predict(api, trained.x[:1], ["scale"]).status_code == 200
        assert runtime.stats.resident_loads == 2
    with open_client(settings.model_copy(update={"pin": "fs"}), run_jobs=False) as api:
        runtime = api.app.state.runtime
        deadline = 100
        while api.get("/v2/health/ready").status_code != 200 and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["scale"]}).status_code == 200
        assert len(runtime.resident_sets()) == 1 and runtime.stats.resident_loads == 1  # pinned: never evicted


def test_traffic_for_one_subset_is_served_by_the_resident_set_with_one_copy_of_the_weights(
    api: Any, trained: Trained
) -> None:
    """A subset that takes all the traffic gets no session of its own (bench/mixed.py: the routed graph serves one
    subset as fast as a fused session does), so its weights are never held twice."""
    runtime = api.app.state.runtime
    want = trained.logits()
    parts = load_parts(trained.run_dir / "parts")
    every_part = parts.ckn.ByteSize() + sum(parts.tasks[n].ByteSize() for n in parts.task_names)
    for i in range(300):
        assert _predict(api, trained.x[i % 8 : i % 8 + 1], ["scale", "pos_x"]).status_code == 200
    r = _predict(api, trained.x, ["scale", "pos_x"])
    for task in ("scale", "pos_x"):
        assert np.abs(np.asarray(r.json()["predictions"][task]["logits"]) - want[task]).max() <= TOL
    assert runtime.cache_bytes == every_part and runtime.entries() == []
    assert runtime.stats.parts.ckn_requests == 301 and runtime.stats.parts.task_rows.get("shape", 0) == 0


@pytest.mark.parametrize("spin", [True, False])
def test_kf_infer_spin_decides_how_every_serving_session_waits_for_work(
    registered: Any,  # noqa: ARG001 (the factor set must exist first)
    migrated: Any,
    trained: Trained,
    spin: bool,
) -> None:
    """KF_INFER_SPIN reaches the resident set's session and a fused assembly's alike: spinning within a run and
    stopping at its end, or sleeping whenever idle."""
    with open_client(migrated.model_copy(update={"infer_spin": spin}), run_jobs=False) as api:
        runtime = api.app.state.runtime
        assert _predict(api, trained.x[:1], ["shape"]).status_code == 200  # the resident (routed) session
        assert api.post("/v1/assemblies", json={"factor_set": "fs", "tasks": ["scale"]}).status_code == 200
        resident = runtime.resident_sets()
        sessions = [r._routed for r in resident] + [e.session for e in runtime.entries()]
        assert len(resident) == 1 and len(sessions) == 2
        for s in sessions:
            options = s.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == str(int(spin))
            assert options.get_session_config_entry("session.force_spinning_stop") == str(int(spin))


@pytest.mark.parametrize(
    ("tasks", "match"),
    [([], "at least one of"), (["low", "nope"], "known tasks"), (["low", "low"], "listed twice"), ("low", "string")],
)
def test_serving_checks_a_task_list_as_assembly_does(tasks: Any, match: str) -> None:
    import uuid

    from kf_core import check_task_names
    from service.serving.refs import FactorSetInfo, TaskInfo

    fs = FactorSetInfo(
        id=uuid.uuid4(),
        name="fs",
        version=1,
        versions=[1],
        tasks=[TaskInfo("high", "digit", [5, 6], ["5", "6"]), TaskInfo("low", "digit", [0, 1], ["0", "1"])],
        input_spec={},
        manifest_sha256="0" * 64,
        manifest_size=1,
    )
    assert fs.canonical_tasks(["low", "high"]) == ("high", "low")  # the factor set's order
    with pytest.raises(Exception, match=match) as served:
        fs.canonical_tasks(tasks)
    with pytest.raises(Exception, match=match) as engine:
        check_task_names(tasks, fs.task_names)
    assert (type(served.value), str(served.value)) == (type(engine.value), str(engine.value))
