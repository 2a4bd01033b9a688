"""The web console in a real Chromium, against a live API: the admin's whole path (upload a teacher, factorize
it, watch the job, open the factor set, predict in the playground and compare with /v1/predict, download the
fused graph), cancelling a job, what a predict key may see and do, and that names are shown as text, never run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import Console, Tab, sign_in

# Three tasks on one 10-class output, so that two subsets really differ: a class group each and all ten digits.
TASKS = [
    {"name": "low", "output": "digit", "classes": [0, 1, 2, 3, 4]},
    {"name": "high", "output": "digit", "classes": [5, 6, 7, 8, 9]},
    {"name": "digit", "output": "digit"},
]
TINY = {
    "train": {"batch_size": 32, "eval_every": 0},
    "factor": {
        "ckn": {"name": "mlp", "kwargs": {"hidden": [16]}},
        "tsn": {"name": "mlp", "kwargs": {"hidden": [8]}},
        "feature_dim": 8,
    },
}
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.factories import onnx_teacher_file

    return onnx_teacher_file(tmp_path_factory.mktemp("ui-teacher") / "digits.onnx", {"digit": 10})


@pytest.fixture(scope="module")
def api_teacher(console: Console, teacher_file: Path) -> dict[str, Any]:
    """A teacher uploaded through the API (for tests that are not about the upload form)."""
    files = {"file": ("digits.onnx", teacher_file.read_bytes())}
    spec = json.dumps({"name": "digits-api", "tasks": TASKS})
    r = console.api("POST", "/v1/teachers", files=files, data={"spec": spec})
    assert r.status_code == 201, r.text
    teacher: dict[str, Any] = r.json()
    return teacher


def _long_job(console: Console, teacher_id: str) -> dict[str, Any]:
    body = {"teacher_id": teacher_id, "dataset": "digits", "overrides": {**TINY, "epochs": 500, "samples": 1000}}
    r = console.api("POST", "/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    return job


def _shown_predictions(tab: Tab) -> dict[str, str]:
    tab.page.wait_for_selector("#pg-results .task-result")
    out: dict[str, str] = {}
    for card in tab.page.locator("#pg-results .task-result").all():
        out[card.get_attribute("data-task") or ""] = card.locator(".label").inner_text()
    return out


def _tick(tab: Tab, tasks: list[str]) -> None:
    for box in tab.page.locator("#pg-tasks input[type=checkbox]").all():
        box.set_checked((box.get_attribute("value") or "") in tasks)


def test_sign_in_refuses_a_wrong_key(console: Console, tab: Tab) -> None:
    tab.page.goto(console.url())
    tab.page.wait_for_selector("#sign-in")
    tab.shot("sign-in")
    tab.page.fill("#api-key", "kf_000000000000_" + "x" * 43)
    tab.page.click("#sign-in button[type=submit]")
    tab.page.wait_for_selector("#sign-in-error:not(:empty)")
    assert "not valid" in tab.page.inner_text("#sign-in-error")
    assert tab.page.evaluate("sessionStorage.getItem('kf-api-key')") is None
    assert not tab.errors


def test_admin_uploads_factorizes_and_predicts(console: Console, tab: Tab, teacher_file: Path) -> None:
    page = tab.page
    sign_in(tab, console, console.admin_key)
    page.wait_for_selector("text=Service")
    assert "admin key" in page.inner_text("#scope")
    assert console.admin_key not in page.url
    tab.shot("overview")

    # Upload a teacher: first with a bad name (the API's message lands next to the name field), then for real.
    page.click(".nav a[data-page=teachers]")
    page.set_input_files("#f-file", str(teacher_file))
    page.fill("#f-name", "bad name!")
    page.fill("#f-tasks", json.dumps(TASKS))
    page.click("#teacher-upload button[type=submit]")
    name_error = page.locator('#teacher-upload .field[data-field="name"] .field-error')
    name_error.wait_for()
    assert "name" in name_error.inner_text() and "pattern" in name_error.inner_text()
    tab.shot("teachers-upload-error")
    page.fill("#f-name", "digits-console")
    page.click("#teacher-upload button[type=submit]")
    page.wait_for_selector("h1:text-is('digits-console')")
    tab.shot("teacher")

    # Factorize it with a tiny budget and watch the bar reach 100 %.
    page.click("#factorize")
    page.wait_for_selector("#job-form")
    page.fill('#job-form [name="overrides.epochs"]', "2")
    page.fill('#job-form [name="overrides.samples"]', "300")
    page.fill('#job-form [name="overrides"]', json.dumps(TINY))
    page.fill('#job-form [name="name"]', "console-fs")
    tab.shot("job-new")
    page.click("#job-form button[type=submit]")
    page.wait_for_selector("#job-progress")
    job_id = page.url.rsplit("/", 1)[1]
    page.wait_for_selector("#job-progress[aria-valuenow='100']", timeout=180_000)
    page.wait_for_selector(".badge-succeeded", timeout=60_000)
    assert page.inner_text("#job-progress") == "100 %"
    assert console.api("GET", f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    page.wait_for_selector("#loss-curve svg path.series")
    tab.shot("job")

    # The factor set: tasks, accuracy chart, lineage with sha256s.
    page.click("#job-factor-set")
    page.wait_for_selector("h1:has-text('console-fs')")
    fs = console.api("GET", "/v1/factor-sets", params={"name": "console-fs"}).json()["data"][0]
    body = page.inner_text("main")
    for task in ("low", "high", "digit"):
        assert task in body
    assert fs["ckn_artifact"]["sha256"] in body and fs["lineage"]["teacher"]["sha256"] in body
    tab.shot("factor-set")

    # The playground on two subsets, each checked against /v1/predict on the same input.
    page.click("#open-playground")
    page.wait_for_selector("#pg-input-note:has-text('Held-out sample')")
    sample = console.api("GET", f"/v1/factor-sets/{fs['id']}/samples", params={"offset": 0, "limit": 1}).json()
    for subset in (["low", "digit"], ["high"]):
        _tick(tab, subset)
        page.click("#pg-run")
        shown = _shown_predictions(tab)
        expected = console.api(
            "POST", "/v1/predict", json={"factor_set": fs["id"], "tasks": subset, "inputs": sample["inputs"]}
        ).json()
        assert sorted(shown) == sorted(subset)
        assert shown == {t: expected["predictions"][t]["class_names"][0] for t in subset}
        assert "ms round trip" in page.inner_text("#pg-latency")
    page.locator("#pg-results").scroll_into_view_if_needed()
    tab.shot("playground")
    assert "tritonclient" in page.inner_text("#pg-snippets") and console.admin_key not in page.inner_text("main")

    # The other inputs: a .npy batch (checked against /v1/predict), an image and a drawing.
    import io

    import numpy as np

    batch = np.asarray(sample["inputs"], dtype=np.float32)[:, :, ::-1, :].copy()  # mirrored: another input
    npy = io.BytesIO()
    np.save(npy, batch)
    page.set_input_files("#pg-npy", {"name": "x.npy", "mimeType": "application/octet-stream", "buffer": npy.getvalue()})
    page.wait_for_selector("#pg-input-note:has-text('x.npy')")
    page.click("#pg-run")
    page.wait_for_selector("#pg-results .task-result")
    expected = console.api(
        "POST", "/v1/predict", json={"factor_set": fs["id"], "tasks": ["high"], "inputs": batch.tolist()}
    )
    assert _shown_predictions(tab) == {"high": expected.json()["predictions"]["high"]["class_names"][0]}
    png = io.BytesIO()
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(image).ellipse((16, 8, 48, 56), outline=255, width=6)
    image.save(png, format="PNG")
    page.set_input_files("#pg-image", {"name": "zero.png", "mimeType": "image/png", "buffer": png.getvalue()})
    page.wait_for_selector("#pg-input-note:has-text('zero.png')")
    page.click("#pg-run")
    page.wait_for_selector("#pg-results .task-result")
    box = page.locator("#pg-pad").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.8 * box["height"], steps=8)
    page.mouse.up()
    page.wait_for_selector("#pg-input-note:has-text('drawing')")
    page.click("#pg-run")
    page.wait_for_selector("#pg-results .task-result")
    page.locator("#pg-pad").scroll_into_view_if_needed()
    tab.shot("playground-drawing")

    # The fused graph of the ticked subset downloads, with the key in a header only.
    with page.expect_download() as info:
        page.click("#pg-onnx")
    path = info.value.path()
    import onnx

    graph = onnx.load(str(path))
    assert {o.name for o in graph.graph.output} >= {"probs_high"}

    for name in ("overview", "jobs", "factor-sets", "datasets", "teachers"):
        page.click(f".nav a[data-page={name}]")
        page.wait_for_selector("main h1")
        page.wait_for_selector("main[aria-busy=false]")
        tab.shot(name if name != "overview" else "overview-with-data")
    assert not tab.errors and not tab.dialogs


def test_admin_cancels_a_running_job(console: Console, tab: Tab, api_teacher: dict[str, Any]) -> None:
    job = _long_job(console, api_teacher["id"])
    sign_in(tab, console, console.admin_key, f"#/jobs/{job['id']}")
    tab.page.click("#cancel-job")
    tab.page.wait_for_selector(".badge-cancelled", timeout=60_000)
    assert console.api("GET", f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert tab.page.locator("#cancel-job").count() == 0
    tab.shot("job-cancelled")


def test_predict_key_sees_no_admin_action_and_the_api_refuses_one(
    console: Console, tab: Tab, api_teacher: dict[str, Any]
) -> None:
    job = _long_job(console, api_teacher["id"])
    try:
        page = tab.page
        sign_in(tab, console, console.predict_key)
        assert "predict key" in page.inner_text("#scope")
        for hash_path, admin_only in (
            ("#/teachers", "#teacher-upload"),
            (f"#/teachers/{api_teacher['id']}", "#factorize"),
            ("#/datasets", "#dataset-upload"),
            ("#/jobs", "#new-job"),
            (f"#/jobs/{job['id']}", "#cancel-job"),
        ):
            page.goto(console.url(hash_path))
            page.wait_for_selector("main[aria-busy=false]")
            assert page.locator(admin_only).count() == 0, f"{hash_path} shows {admin_only} to a predict key"
        tab.shot("predict-key-job")
        forced = page.evaluate(
            """async ([teacher, job]) => {
                const headers = {Authorization: `Bearer ${sessionStorage.getItem('kf-api-key')}`,
                                 'Content-Type': 'application/json'};
                const submit = await fetch('/v1/jobs', {method: 'POST', headers,
                    body: JSON.stringify({teacher_id: teacher, dataset: 'digits'})});
                const cancel = await fetch(`/v1/jobs/${job}/cancel`, {method: 'POST', headers});
                return [submit.status, cancel.status];
            }""",
            [api_teacher["id"], job["id"]],
        )
        assert forced == [403, 403]
        assert console.api("GET", f"/v1/jobs/{job['id']}").json()["cancel_requested_at"] is None
    finally:
        console.api("POST", f"/v1/jobs/{job['id']}/cancel")


def test_a_hostile_teacher_name_renders_as_text(console: Console, tab: Tab) -> None:
    from service.catalog import queries as catalog
    from service.catalog.artifacts import open_store
    from service.catalog.db import make_engine, make_sessionmaker
    from service.schemas import TeacherInfo

    # The API refuses such a name (see the form check below), so put it in the catalog directly, as an older
    # version or another writer could have.
    engine = make_engine(console.settings)
    with make_sessionmaker(engine)() as session:
        stored = open_store(console.settings).put_bytes(b"not really a model")
        artifact = catalog.record_artifact(session=session, stored=stored, media_type="application/onnx")
        info = TeacherInfo(
            format="onnx",
            input_shape=[1, 8, 8],
            outputs={XSS: "y"},
            output_sizes={XSS: 2},
            features=[],
            feature_dims=[],
            class_names={XSS: [XSS, "<script>alert(2)</script>"]},
            tasks=[{"name": XSS}],
        )
        teacher = catalog.create_teacher(
            session=session,
            name=XSS,
            filename=XSS + ".onnx",
            description="<b>bold?</b>",
            info=info,
            artifact=artifact,
        )
        session.commit()
        teacher_id = str(teacher.id)
    engine.dispose()

    page = tab.page
    sign_in(tab, console, console.admin_key, "#/teachers")
    page.wait_for_selector(f"a:text-is('{XSS}')")
    assert page.locator("main img").count() == 0
    page.goto(console.url(f"#/teachers/{teacher_id}"))
    page.wait_for_selector(f"h1:text-is('{XSS}')")
    assert page.locator("main img, main script, main b").count() == 0
    assert "<script>alert(2)</script>" in page.inner_text("main")
    tab.shot("xss-teacher")

    # The upload form with that name: the API's refusal is shown next to the field, as text.
    page.goto(console.url("#/teachers"))
    page.set_input_files("#f-file", {"name": "t.onnx", "mimeType": "application/octet-stream", "buffer": b"x"})
    page.fill("#f-name", XSS)
    page.click("#teacher-upload button[type=submit]")
    page.locator('#teacher-upload .field[data-field="name"] .field-error').wait_for()
    assert page.locator("main img").count() == 0
    assert not tab.dialogs and not tab.errors
