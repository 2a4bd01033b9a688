"""``kf demo`` end to end on the embedded default (SQLite, inline jobs, local artifacts) with a tiny budget: a
teacher, a factorization job over HTTP, two assemblies and predictions, all through the real API."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.catalog.db import make_engine, make_sessionmaker
from service.catalog.models import Assembly, FactorSet, Job
from service.cli import main
from service.config import Settings


def test_kf_demo_runs_the_service_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the embedded default lives in ./kf-data
    for name in ("KF_DATABASE_URL", "KF_REDIS_URL", "KF_ARTIFACT_DIR", "KF_WORK_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KF_TORCH_THREADS", "1")
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        assert main(["demo", "--epochs", "1", "--samples", "1200"]) == 0
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr().out
    for step in ("1/5", "2/5", "3/5", "4/5", "5/5", "registered factor set dsprites-demo:1", "done in"):
        assert step in out, out
    assert "shape+scale" in out and "orientation+pos_x+pos_y" in out
    assert out.rstrip().splitlines()[-1].startswith("web console: run `kf serve`, then open http://127.0.0.1:8000/ui/")
    assert out.count("predicted [") == 5 and "test accuracy" in out

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite:///./kf-data/catalog.db"
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(FactorSet)) == 1
        assert session.scalar(select(Job.status)) == "succeeded"
        assert session.scalar(select(func.count()).select_from(Assembly)) == 2
    engine.dispose()


def test_the_job_bar_shows_the_epoch_its_percentage_is_in() -> None:
    from service.cli.demo import job_bar

    job = {"status": "running", "step": 98, "steps_total": 100, "epoch": 3, "epochs": 4}
    assert job_bar(job) == (98, "4/4")  # 98 % of four epochs is in the fourth, not "3/4"
    assert job_bar({**job, "step": 30, "epoch": 1}) == (30, "2/4")
    # The last progress write is throttled, so a finished job's row may lag its last steps: the bar ends full.
    assert job_bar({**job, "status": "succeeded"}) == (100, "4/4")
    assert job_bar({**job, "status": "queued", "step": 0, "steps_total": 0, "epochs": 0}) == (0, "0/0")
