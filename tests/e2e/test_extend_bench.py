"""bench/extend.py on a tiny budget: the same checks as the dSprites acceptance run (CKN sha256 shared by both
versions, the old tasks' outputs bitwise equal, the extended task's accuracy and timing reported against a full
factorization). Accuracy and time targets are only meaningful on the full budget, so they are reported, not
asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench" / "extend.py"


def test_extend_bench_on_a_tiny_budget(tmp_path: Path) -> None:
    cmd = [sys.executable, str(BENCH), "--out", str(tmp_path), "--samples", "400", "--epochs", "1"]
    done = subprocess.run([*cmd, "--teacher-epochs", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ckn_same"] is True and result["ckn_sha256_v1"] == result["ckn_sha256_v2"]
    assert result["old_tasks_bitwise_equal"] is True and result["old_tasks_test_samples"] == 120
    assert 0.0 <= result["extended_accuracy"] <= 100.0 and 0.0 <= result["full_accuracy"] <= 100.0
    assert result["extend_train_seconds"] > 0 and result["full_train_seconds"] > 0
    assert result["time_ratio"] == pytest.approx(result["extend_train_seconds"] / result["full_train_seconds"])
