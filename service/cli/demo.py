"""``kf demo``: the whole product on the embedded default, in a few minutes on a laptop.

Generates dSprites, fits a small teacher, starts the API (SQLite catalog, inline jobs, local artifacts), uploads
the teacher and factorizes it as a job over HTTP, then assembles two task subsets and posts predictions, printing
them with the per-task accuracies. Everything the demo registers stays in the catalog: ``kf serve`` afterwards
serves the ``dsprites-demo`` factor set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from tqdm.auto import tqdm

from kf_core import (
    ProgressBar,
    demo_recipe,
    epoch_text,
    load_split,
    load_teacher,
    run_teacher_fit,
    save_torchscript,
    varied_samples,
)
from service.catalog.migrate import upgrade
from service.config import Settings
from service.main import create_app

__all__ = ["job_bar", "job_request", "run_service_demo"]

FACTOR_SET = "dsprites-demo"
CONSOLE_URL = "http://127.0.0.1:8000/ui/"  # where `kf serve` (default host and port) serves the console
_SUBSETS = (["shape", "scale"], ["orientation", "pos_x", "pos_y"])


def run_service_demo(
    settings: Settings,
    out: Path,
    *,
    epochs: int | None = None,
    samples: int | None = None,
    seed: int | None = None,
    show: int = 4,
) -> dict[str, Any]:
    started = time.perf_counter()
    # The embedded default: jobs run inline; their processes log warnings only, so the demo's own lines stay readable.
    settings = settings.model_copy(update={"redis_url": None, "log_level": "warning"})
    recipe = demo_recipe("dsprites", epochs=epochs, samples=samples, seed=seed)
    print(f"kf demo: catalog {settings.database_url}, artifacts {settings.artifact_url}")
    upgrade(settings)
    print(
        f"1/5 generating dSprites ({recipe.data.samples} images) and fitting a small teacher "
        f"({recipe.teacher.train.epochs} epochs)"
    )
    run_teacher_fit(recipe, out / "teacher", callbacks=[ProgressBar("teacher")])

    with _server(settings) as api:
        # TorchScript keeps the teacher's backbone module, which the demo's CKN starts from (an ONNX export folds
        # BatchNorm into the convolutions); ONNX teachers are uploaded the same way (README: Bring your own teacher).
        print(f"2/5 API up at {api.base_url}; uploading the teacher (TorchScript)")
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        reading = save_torchscript(load_teacher(out / "teacher"), out / "teacher" / "teacher.pt")
        test = _test_split(recipe)
        spec = {"name": f"demo-teacher-{stamp}", "class_names": {k: list(v) for k, v in test.classes.items()}}
        spec |= reading
        script = (out / "teacher" / "teacher.pt").read_bytes()
        files = {"file": ("teacher.pt", script)}
        teacher = _ok(api.post("/v1/teachers", files=files, data={"spec": json.dumps(spec)}))
        print(f"3/5 factorizing it as a job (POST /v1/jobs), {recipe.train.epochs} epochs")
        job = _ok(api.post("/v1/jobs", json=job_request(recipe, teacher["id"])))
        job = _follow(api, job["id"])
        fs = _ok(api.get(f"/v1/factor-sets/{job['factor_set_id']}"))
        ref = f"{fs['name']}:{fs['version']}"
        print(f"    registered factor set {ref}")
        print(f"    {'task':<12} {'teacher':>8} {'factor':>8}")
        accuracy = {f["task"]: f["metrics"] for f in fs["factors"]}
        for task, m in accuracy.items():
            print(f"    {task:<12} {100 * m['teacher_accuracy']:7.2f}% {100 * m['factor_accuracy']:7.2f}%")

        print("4/5 assembling two task subsets on the fly (POST /v1/assemblies; no fine-tuning)")
        for subset in _SUBSETS:
            a = _ok(api.post("/v1/assemblies", json={"factor_set": ref, "tasks": subset}))
            print(
                f"    {'+'.join(subset):<26} assembly {a['id']}: {a['size_bytes'] / 1e6:.1f} MB graph, "
                f"{a['cache']}, built in {a['build_ms']:.0f} ms on {a['provider']}"
            )

        picks = varied_samples(test.labels, show)
        print(f"5/5 predicting {len(picks)} varied test images with each assembly (POST /v1/predict)")
        x = test.images(picks)
        for subset in _SUBSETS:
            pred = _ok(api.post("/v1/predict", json={"factor_set": ref, "tasks": subset, "inputs": x.tolist()}))
            print(f"    {'+'.join(subset)}:")
            for task in subset:
                classes = test.classes.get(task) or []
                truth = [classes[int(c)] if classes else str(int(c)) for c in test.labels[task][picks]]
                got = pred["predictions"][task]["class_names"]
                conf = [f"{max(p):.2f}" for p in pred["predictions"][task]["probabilities"]]
                acc = 100 * accuracy[task]["factor_accuracy"]
                print(f"      {task:<12} predicted {got} (p {conf}) truth {truth}; test accuracy {acc:.1f}%")
    wall = time.perf_counter() - started
    print(f"done in {wall:.0f} s. `kf serve` serves {FACTOR_SET} from the same catalog (README: Predictions)")
    print(f"web console: run `kf serve`, then open {CONSOLE_URL} (jobs, factor sets and a playground for {FACTOR_SET})")
    return {"factor_set": fs, "wall_seconds": wall}


def job_request(recipe: Any, teacher_id: str) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body of the demo: the whole demo recipe, so the job trains on exactly the budget,
    data and settings ``demo_recipe`` chose (the server's dsprites recipe would train a larger run)."""
    return {"teacher_id": teacher_id, "dataset": "dsprites", "name": FACTOR_SET, "recipe": recipe.to_json()}


def _test_split(recipe: Any) -> Any:
    return load_split(recipe.data).test


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: {response.text[:500]}"
        )
    return response.json()


def _follow(api: httpx.Client, job_id: str) -> dict[str, Any]:
    """Poll the job, drawing its progress, until it finishes; raise if it did not succeed."""
    bar = None
    while True:
        job: dict[str, Any] = _ok(api.get(f"/v1/jobs/{job_id}"))
        if job["steps_total"] and bar is None:
            bar = tqdm(total=job["steps_total"], desc="factorize (job)")
        if bar is not None:
            bar.n, epoch = job_bar(job)
            bar.set_postfix(stage=job["stage"], epoch=epoch, refresh=False)
            bar.refresh()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if bar is not None:
                bar.close()
            if job["status"] != "succeeded":
                raise RuntimeError(f"the factorization job {job['status']}: {job['error']}")
            return job
        time.sleep(0.5)


def job_bar(job: dict[str, Any]) -> tuple[int, str]:
    """``(steps done, epoch text)`` of the job's progress bar; both come from the step, so they always agree."""
    total, epochs = int(job["steps_total"] or 0), int(job["epochs"] or 0)
    # A succeeded job did every step, even when its last progress write (throttled) came before the last one.
    step = total if job["status"] == "succeeded" else int(job["step"] or 0)
    return step, epoch_text(step, total // max(1, epochs), epochs)


@contextlib.contextmanager
def _server(settings: Settings) -> Iterator[httpx.Client]:
    """The API on a free loopback port, in this process (its jobs run in child processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="kf-demo-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start; see the messages above")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
