"""The ``kf`` service commands, for real: ``kf db upgrade`` and ``kf serve`` as processes, then ``kf teachers`` and
``kf jobs submit/list/show/cancel`` talking to that server over HTTP; ``kf worker`` refusing to start without Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.cli import main as kf
from tests.conftest import make_settings
from tests.service.helpers import DIGIT_GROUPS, TeacherFiles, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """``kf db upgrade`` then ``kf serve`` in a subprocess (SQLite, inline jobs); yields the API's URL."""
    from service.config import settings_env

    env = {**os.environ, **settings_env(make_settings(tmp_path, f"sqlite:///{tmp_path}/catalog.db"))}
    kf_cmd = [sys.executable, "-m", "service.cli"]
    subprocess.run([*kf_cmd, "db", "upgrade"], env=env, check=True, capture_output=True)
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*kf_cmd, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{url}/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, what="kf serve to answer", interval=0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _run(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = kf(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_jobs_commands_against_a_live_server(
    server: str, teacher_files: TeacherFiles, tmp_path: Path, capsys: Any
) -> None:
    health = httpx.get(f"{server}/v1/health").json()
    assert (health["status"], health["database"], health["jobs"]) == ("ok", "sqlite", "inline")
    assert health["provider"] == "CPUExecutionProvider"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "digits-mlp", "tasks": DIGIT_GROUPS}))
    code, out, _ = _run(
        capsys, "teachers", "upload", str(teacher_files.digits_onnx), "--spec", str(spec), "--api", server
    )
    assert code == 0
    teacher = json.loads(out)
    code, out, _ = _run(capsys, "teachers", "list", "--api", server)
    assert code == 0 and "digits-mlp" in out and "1 teacher(s)" in out

    submit = ["jobs", "submit", "--teacher", teacher["id"], "--dataset", "digits", "--api", server]
    tiny = ["--epochs", "1", "--samples", "200", "--set", "train.batch_size=32", "--set", "train.eval_every=0"]
    nets = ["--set", 'factor.ckn={"name": "mlp", "kwargs": {"hidden": [16]}}', "--set", "factor.feature_dim=8"]
    code, out, err = _run(capsys, *submit, *tiny, *nets, "--tasks", "low,high", "--wait")
    assert code == 0, err
    done = json.loads(out)
    assert done["status"] == "succeeded" and done["factor_set_id"]
    assert "running" in err and "succeeded" in err  # --wait followed the progress on stderr

    code, out, _ = _run(capsys, *submit, *tiny, "--epochs", "50")
    assert code == 0
    long_job = json.loads(out)
    code, out, _ = _run(capsys, "jobs", "cancel", long_job["id"], "--api", server)
    assert code == 0 and json.loads(out)["cancel_requested_at"] is not None
    code, out, _ = _run(capsys, "jobs", "show", long_job["id"], "--wait", "--api", server)
    assert code == 1 and json.loads(out)["status"] == "cancelled"  # exit status 1: it did not succeed

    code, out, _ = _run(capsys, "jobs", "list", "--api", server)
    assert code == 0 and "2 of 2 job(s)" in out and "succeeded" in out and "cancelled" in out
    code, out, _ = _run(capsys, "jobs", "list", "--status", "succeeded", "--api", server)
    assert "1 of 1 job(s)" in out


def test_client_errors_are_one_line_with_exit_status_2(server: str, capsys: Any) -> None:
    code, _, err = _run(capsys, "jobs", "show", "00000000-0000-0000-0000-000000000000", "--api", server)
    assert code == 2 and "does not exist" in err and "(HTTP 404)" in err
    code, _, err = _run(capsys, "jobs", "submit", "--teacher", "nope", "--dataset", "digits", "--api", server)
    assert code == 2 and "(HTTP 422)" in err
    code, _, err = _run(
        capsys, "jobs", "submit", "--teacher", "x", "--dataset", "digits", "--set", "lr=1", "--api", server
    )
    assert code == 2 and "--set expects train.KEY=VALUE" in err
    code, _, err = _run(capsys, "jobs", "list", "--api", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach the KF API" in err


def test_worker_needs_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.config import get_settings

    monkeypatch.delenv("KF_REDIS_URL", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit, match="kf worker needs KF_REDIS_URL"):
            kf(["worker", "--burst"])
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("command", [["keys", "create", "--scope", "admin"], ["keys", "list"], ["serve"]])
def test_an_unmigrated_catalog_says_run_kf_db_upgrade(command: list[str], tmp_path: Path) -> None:
    from service.config import settings_env

    env = {**os.environ, **settings_env(make_settings(tmp_path, f"sqlite:///{tmp_path}/empty.db"))}
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "is not migrated" in done.stderr and "run `kf db upgrade`" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
