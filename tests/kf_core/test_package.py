"""The package surface: every public name resolves, and a missing ONNX Runtime fails at import, clearly."""

from __future__ import annotations

import subprocess
import sys

import kf_core
import kf_core.evaluation


def test_every_public_name_resolves() -> None:
    for name in kf_core.__all__:
        assert getattr(kf_core, name) is not None, name
    for name in kf_core.evaluation.__all__:
        assert getattr(kf_core.evaluation, name) is not None, name


def test_the_public_names_are_the_lazy_exports() -> None:
    # __all__ is written out so type checkers see the re-exports; it must list exactly what loads lazily.
    assert sorted(kf_core.__all__) == sorted(kf_core._EXPORTS)
    assert sorted(kf_core.evaluation.__all__) == sorted(kf_core.evaluation._EXPORTS)
    assert "run_factorization" in kf_core.__all__ and "assemble_session" in kf_core.__all__


def test_serving_names_load_without_torch() -> None:
    code = (
        "import sys; from kf_core import assemble_session, check_batch, FactorParts, COMBINED; "
        "print('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_missing_onnxruntime_fails_at_import_with_the_fix() -> None:
    code = "import sys; sys.modules['onnxruntime'] = None; import kf_core"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "install kf-service[cpu] or kf-service[gpu], never both" in proc.stderr
