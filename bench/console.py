"""Benchmark: does the web console stay usable with a big catalog? Page load p50 in a real Chromium.

Fills two SQLite catalogs straight through the ORM (no training: the rows are what the pages read): a small one
(10 jobs, 5 factor sets) as the baseline and a big one (1,000 jobs, 200 factor sets of 3 tasks each, every job
status represented), serves each with the API on a free port, and loads each console page ``--reps`` times in
headless Chromium (Debian's ``chromium`` through Playwright, fresh page each time, so the HTML, CSS, every module
and all the page's API calls are in the figure). A load ends when the page has rendered its data
(``main[aria-busy=false]``); the time is ``performance.now()`` then, i.e. from the start of navigation.

Pages: overview, jobs (first and last page of 25), factor sets (first and last page), a factor set, a job.
Lists are paginated on the server, so the big catalog should cost about what the small one does: the ratio
big/small is the figure to watch (about 1 means the pages do not grow with the catalog).

Run: ``.venv/bin/python bench/console.py [--reps 15]`` (needs ``pip install -e '.[ui-tests]'`` and chromium).
The last output line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STATUSES = ("queued", "running", "failed", "cancelled")


def fill_catalog(root: Path, *, jobs: int, factor_sets: int) -> tuple[Any, str, str]:
    """A migrated catalog with ``jobs`` jobs, the first ``factor_sets`` of them succeeded with a factor set."""
    from service.catalog.db import make_engine, make_sessionmaker, utcnow
    from service.catalog.migrate import upgrade
    from service.catalog.models import Artifact, Dataset, Factor, FactorSet, Job, Teacher
    from service.config import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=f"sqlite:///{root}/catalog.db", artifact_dir=root / "a", work_dir=root / "w"
    )
    upgrade(settings)
    engine = make_engine(settings)
    counter = iter(range(10**9))

    def artifact() -> Artifact:
        n = next(counter)
        return Artifact(sha256=f"{n:064x}", size_bytes=1000 + n, media_type="application/onnx", path=f"x/{n}")

    with make_sessionmaker(engine)() as s:
        teacher = Teacher(
            name="bench-teacher",
            format="onnx",
            filename="t.onnx",
            artifact=artifact(),
            input_shape=[1, 8, 8],
            outputs={"digit": "digit"},
            output_sizes={"digit": 10},
            features=["feat_0"],
            feature_dims=[16],
            class_names={"digit": list("0123456789")},
            tasks=[],
        )
        dataset = Dataset(
            name="digits",
            source="digits",
            input_shape=[1, 8, 8],
            classes={"digit": list("0123456789")},
            num_samples=1797,
        )
        s.add_all([teacher, dataset])
        s.flush()
        tasks = [("low", [0, 1, 2, 3, 4]), ("high", [5, 6, 7, 8, 9]), ("digit", list(range(10)))]
        history = [{"epoch": float(e), "loss": 2.0 / e, "loss_infomax": -0.1 * e} for e in range(1, 21)]
        job_id = fs_id = ""
        for i in range(jobs):
            done = i < factor_sets
            job = Job(
                id=uuid.uuid4(),
                status="succeeded" if done else STATUSES[i % len(STATUSES)],
                stage="done" if done else "training",
                teacher_id=teacher.id,
                dataset_id=dataset.id,
                recipe={"data": {"source": "digits"}},
                factor_set_name=f"fs-{i % 50}",
                queue="kf",
                max_attempts=3,
                progress=1.0 if done else (i % 100) / 100,
                epoch=5,
                epochs=20,
                step=100,
                steps_total=400,
                metrics={"loss": 1.0, "loss_infomax": -0.5},
                attempts=1,
            )
            s.add(job)
            if done:
                fs = FactorSet(
                    id=uuid.uuid4(),
                    name=f"fs-{i % 50}",
                    version=i // 50 + 1,
                    teacher_id=teacher.id,
                    dataset_id=dataset.id,
                    job_id=job.id,
                    config={"data": {"source": "digits"}},
                    metrics={"history": history},
                    input_spec={"name": "x", "shape": [None, 1, 8, 8]},
                    ckn_artifact=artifact(),
                    manifest_artifact=artifact(),
                    report_artifact=artifact(),
                    created_at=utcnow(),
                )
                fs.factors = [
                    Factor(
                        task=t,
                        position=k,
                        output="digit",
                        classes=c,
                        class_names=[str(x) for x in c],
                        artifact=artifact(),
                        metrics={"teacher_accuracy": 0.9, "factor_accuracy": 0.85},
                    )
                    for k, (t, c) in enumerate(tasks)
                ]
                s.add(fs)
                fs_id = str(fs.id)
            job_id = str(job.id)
            if i % 200 == 0:
                s.flush()
        s.commit()
    engine.dispose()
    return settings, job_id, fs_id


class IdleRunner:
    """Runs nothing: the catalog's queued and running jobs are rows for the pages to show, not work to start
    (the default inline runner would pick them up and spend the benchmark's CPU failing them)."""

    def __init__(self, *_: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, *, terminate: bool = True) -> None:
        pass

    def enqueue(self, job: Any) -> None:
        pass


def measure(settings: Any, job_id: str, fs_id: str, browser: Any, reps: int, jobs: int, sets: int) -> dict[str, float]:
    import uvicorn

    from service.main import create_app
    from tests.service.helpers import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, runner=IdleRunner), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    last_jobs, last_sets = 25 * ((jobs - 1) // 25), 25 * ((sets - 1) // 25)
    pages = {
        "overview": "#/overview",
        "jobs": "#/jobs",
        "jobs, last page": f"#/jobs?offset={last_jobs}",
        "factor sets": "#/factor-sets",
        "factor sets, last page": f"#/factor-sets?offset={last_sets}",
        "factor set": f"#/factor-sets/{fs_id}",
        "job": f"#/jobs/{job_id}",
    }
    out: dict[str, float] = {}
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        for name, hash_path in pages.items():
            times = []
            for _ in range(reps + 1):  # the first load warms the server's caches; it is not counted
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}/ui/{hash_path}")
                page.wait_for_selector("main[aria-busy=false]", timeout=30_000)
                times.append(float(page.evaluate("performance.now()")))
                page.close()
            out[name] = statistics.median(times[1:])
        context.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--factor-sets", type=int, default=200)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for label, jobs, sets in (("small", 10, 5), ("big", args.jobs, args.factor_sets)):
            root = Path(tmp) / label
            root.mkdir()
            started = time.perf_counter()
            settings, job_id, fs_id = fill_catalog(root, jobs=jobs, factor_sets=sets)
            print(f"{label}: {jobs} jobs, {sets} factor sets filled in {time.perf_counter() - started:.1f} s")
            results[label] = measure(settings, job_id, fs_id, browser, args.reps, jobs, sets)
        browser.close()
    print(f"{'page':<24} {'small p50 ms':>13} {'big p50 ms':>11} {'big/small':>10}")
    ratios = {}
    for page, small in results["small"].items():
        big = results["big"][page]
        ratios[page] = big / small
        print(f"{page:<24} {small:13.1f} {big:11.1f} {ratios[page]:10.2f}")
    big_all = list(results["big"].values())
    summary = {
        "jobs": args.jobs,
        "factor_sets": args.factor_sets,
        "reps": args.reps,
        "p50_ms_big": {k: round(v, 1) for k, v in results["big"].items()},
        "p50_ms_small": {k: round(v, 1) for k, v in results["small"].items()},
        "ratio_big_over_small": {k: round(v, 2) for k, v in ratios.items()},
        "worst_page_p50_ms_big": round(max(big_all), 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
