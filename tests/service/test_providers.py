"""Provider choice (KF_DEVICE): CUDA only when a session really runs on it, a clear refusal for cuda without it."""

from __future__ import annotations

import pytest

from kf_core._ort import available_providers
from service.errors import DeviceUnavailableError
from service.serving.providers import CPU, CUDA, choose_provider

HAS_CUDA = CUDA in available_providers()


def test_cpu_is_chosen_without_probing() -> None:
    p = choose_provider("cpu")
    assert (p.name, p.device, p.providers) == (CPU, "cpu", [CPU])


def test_auto_falls_back_to_the_cpu_and_says_why() -> None:
    p = choose_provider("auto", available=[CPU])
    assert (p.name, p.device) == (CPU, "cpu")
    assert "onnxruntime-gpu" in p.reason and "serving on the CPU" in p.reason


def test_cuda_without_the_provider_refuses_with_what_to_install() -> None:
    with pytest.raises(DeviceUnavailableError, match=r"KF_DEVICE=cuda.*kf-service\[gpu\].*KF_DEVICE=auto"):
        choose_provider("cuda", available=[CPU])


def test_an_unknown_device_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        choose_provider("tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this ONNX Runtime build offers CUDA")
def test_this_cpu_build_serves_auto_on_the_cpu() -> None:
    assert choose_provider("auto").name == CPU
    with pytest.raises(DeviceUnavailableError):
        choose_provider("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a GPU")
def test_auto_and_cuda_choose_cuda_when_it_really_loads() -> None:
    for device in ("auto", "cuda"):
        p = choose_provider(device)
        assert (p.name, p.device, p.providers) == (CUDA, "cuda", [CUDA, CPU])
