"""The API the web console relies on: ``/ui`` itself (static files, security headers, no key needed to load
it), ``GET /v1/whoami``, ``/v1/jobs?name=``, the job event stream and held-out samples of a factor set."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.conftest import make_job, open_client
from tests.factories import bearer
from tests.service.serving import TASKS, Trained, register, train_small_factor_set


def test_the_console_loads_without_a_key_under_a_strict_csp(api: Any) -> None:
    r = api.get("/ui", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/ui/")
    page = api.get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" in page.text and "<script>" not in page.text  # module scripts by src only, nothing inline
    script = api.get("/ui/js/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "content-security-policy" in script.headers
    missing = api.get("/ui/js/nope.js")
    assert missing.status_code == 404


def test_no_console_script_parses_html_or_evaluates_code() -> None:
    from service.api.console import UI_DIR

    sources = {p.name: p.read_text() for p in UI_DIR.rglob("*.js")}
    assert len(sources) >= 8
    for name, text in sources.items():
        for banned in (".innerHTML", ".outerHTML", "insertAdjacentHTML(", "document.write", "eval(", "new Function("):
            assert banned not in text, f"{name} uses {banned}"


def test_whoami_names_the_scope_of_the_key(api: Any, keys: dict[str, str]) -> None:
    assert api.get("/v1/whoami").status_code == 401
    admin = api.get("/v1/whoami", headers=bearer(keys["admin"])).json()
    predict = api.get("/v1/whoami", headers=bearer(keys["predict"])).json()
    assert admin == {"scope": "admin", "key_prefix": keys["admin"].split("_")[1]}
    assert predict["scope"] == "predict"


def test_whoami_is_anonymous_while_no_key_exists(client: Any) -> None:
    assert client.get("/v1/whoami").json() == {"scope": "anonymous", "key_prefix": None}


def test_jobs_filter_by_factor_set_name(client: Any, digits_teacher: dict[str, Any]) -> None:
    from tests.factories import tiny_job_body

    for name in ("alpha", "beta", "alpha"):
        assert client.post("/v1/jobs", json=tiny_job_body(digits_teacher["id"], name=name)).status_code == 202
    alpha = client.get("/v1/jobs", params={"name": "alpha"}).json()
    assert alpha["count"] == 2 and {j["factor_set_name"] for j in alpha["data"]} == {"alpha"}
    both = client.get("/v1/jobs", params={"name": "beta", "status": "queued"}).json()
    assert both["count"] == 1
    assert client.get("/v1/jobs", params={"name": "gamma"}).json() == {"data": [], "count": 0}


def _frames(text: str) -> list[dict[str, Any]]:
    out = []
    for frame in text.split("\n\n"):
        lines = frame.splitlines()
        if "event: job" in lines:
            out.append(json.loads("".join(line[5:] for line in lines if line.startswith("data:"))))
    return out


def test_the_event_stream_sends_the_job_and_ends_when_it_is_final(client: Any, digits_teacher: dict[str, Any]) -> None:
    from tests.factories import tiny_job_body

    job = client.post("/v1/jobs", json=tiny_job_body(digits_teacher["id"])).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200  # queued: cancelled at once, final
    with client.stream("GET", f"/v1/jobs/{job['id']}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frames = _frames(r.read().decode())
    assert [f["status"] for f in frames] == ["cancelled"] and frames[0]["id"] == job["id"]
    assert client.get(f"/v1/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}/events").status_code == 404


def test_the_event_stream_follows_changes_of_the_row(migrated: Any, session: Any, store: Any) -> None:
    """The generator itself, against a row another writer changes (as a worker does)."""
    import asyncio

    from service.catalog.db import make_engine, make_sessionmaker
    from service.catalog.models import Job
    from service.jobs.events import job_events

    job = make_job(session, store)
    engine = make_engine(migrated)
    factory = make_sessionmaker(engine)

    async def follow() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        async for frame in job_events(factory, job.id, interval_s=0.05, max_s=20):
            seen.extend(_frames(frame.decode()))
            if len(seen) == 1:
                await asyncio.to_thread(_advance, "running", 0.5)
            elif len(seen) == 2:
                await asyncio.to_thread(_advance, "succeeded", 1.0)
        return seen

    def _advance(status: str, progress: float) -> None:
        from service.catalog.db import utcnow

        with factory() as s:
            row = s.get(Job, job.id)
            assert row is not None
            row.status, row.progress, row.updated_at = status, progress, utcnow()
            s.commit()

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own thread: another test's browser may own this thread's loop
        seen = pool.submit(lambda: asyncio.run(follow())).result()
    engine.dispose()
    assert [(f["status"], f["progress"]) for f in seen] == [("queued", 0.0), ("running", 0.5), ("succeeded", 1.0)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_small_factor_set(tmp_path_factory.mktemp("factorized"))


def test_samples_are_the_test_split_with_per_task_labels(
    trained: Trained, session: Any, store: Any, factory: Any, migrated: Any
) -> None:
    from kf_core.data.spec import DataSpec, load_split

    spec = DataSpec(source="dsprites", samples=640, seed=0, test_fraction=0.25, split_seed=0)
    job = make_job(session, store)
    job.recipe = {"data": spec.to_json(), "tasks": [{"name": t, "output": t} for t in TASKS]}
    session.commit()
    fs = register(trained, session=session, job=job, factory=factory, store=store)
    test = load_split(spec).test
    with open_client(migrated, run_jobs=False) as api:
        r = api.get(f"/v1/factor-sets/{fs.id}/samples", params={"offset": 3, "limit": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["count"], body["offset"], body["shape"], body["split"]) == (len(test), 3, [2, 1, 64, 64], "test")
        np.testing.assert_array_equal(np.asarray(body["inputs"], dtype=np.float32), test.images(np.arange(3, 5)))
        assert body["labels"]["shape"] == [int(v) for v in test.labels["shape"][3:5]]
        assert body["value_range"][0] <= body["value_range"][1]
        # The samples are valid inputs as they are.
        pred = api.post("/v1/predict", json={"factor_set": str(fs.id), "tasks": ["shape"], "inputs": body["inputs"]})
        assert pred.status_code == 200, pred.text
        past = api.get(f"/v1/factor-sets/{fs.id}/samples", params={"offset": len(test)})
        assert past.status_code == 422 and f"has {len(test)}" in past.json()["detail"]
        assert api.get(f"/v1/factor-sets/{fs.id}/samples", params={"limit": 65}).status_code == 422


def test_a_factor_set_without_a_data_spec_has_no_samples(
    trained: Trained, session: Any, store: Any, factory: Any, migrated: Any
) -> None:
    job = make_job(session, store)  # its recipe is {}: no data spec recorded
    fs = register(trained, session=session, job=job, factory=factory, store=store)
    with open_client(migrated, run_jobs=False) as api:
        r = api.get(f"/v1/factor-sets/{fs.id}/samples")
        assert r.status_code == 422 and "no data spec" in r.json()["detail"]
