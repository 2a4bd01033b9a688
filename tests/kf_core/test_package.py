"""The package surface: every public name resolves, and a missing ONNX Runtime fails at import, clearly."""

from __future__ import annotations

import subprocess
import sys

import kf_core


def test_every_public_name_resolves() -> None:
    for name in kf_core.__all__:
        assert getattr(kf_core, name) is not None, name


def test_missing_onnxruntime_fails_at_import_with_the_fix() -> None:
    code = "import sys; sys.modules['onnxruntime'] = None; import kf_core"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "install kf-service[cpu] or kf-service[gpu], never both" in proc.stderr
