"""Every registered network, parametrized over the registry itself (as timm's ``test_models.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from kf_core.errors import ConfigError, UnknownArchitectureError
from kf_core.nets import create_net, list_nets
from kf_core.nets.base import Backbone, GaussianEncoder


@dataclass(frozen=True)
class Case:
    """How to build a registered net small enough for a test, and the natural width that build must have."""

    size: tuple[int, int]  # input (H, W)
    natural_dim: int  # feature_dim when none is asked for
    kwargs: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "mlp": Case((8, 8), 32, {"width": 0.25}),
    "simpleconv64": Case((64, 64), 10, {"width": 0.25}),
    "gaussian_simpleconv64": Case((64, 64), 10, {"width": 0.25}),
    "resnet18": Case((16, 16), 128, {"width": 0.25}),
    "mobilenetv2": Case((16, 16), 1280, {"width": 0.25}),  # last conv stays 1280 below width 1
    "wrn28": Case((16, 16), 16, {"width": 0.25, "depth": 10, "k": 1}),
    "wrn28_2": Case((16, 16), 32, {"width": 0.25}),
    "wrn28_10": Case((8, 8), 64, {"width": 0.1}),
}
NETS = list_nets()
B = 3


def _case(name: str) -> Case:
    if name not in CASES:
        pytest.fail(f"registered net {name!r} has no entry in CASES: add one so it is tested")
    return CASES[name]


def _build(name: str, *, in_channels: int = 3, feature_dim: int | None = None) -> Backbone:
    torch.manual_seed(0)
    case = _case(name)
    return create_net(name, in_channels=in_channels, input_size=case.size, feature_dim=feature_dim, **case.kwargs)


def _input(name: str, in_channels: int = 3) -> torch.Tensor:
    return torch.randn(B, in_channels, *_case(name).size, generator=torch.Generator().manual_seed(1))


GAUSSIAN = [n for n in NETS if n in CASES and isinstance(_build(n), GaussianEncoder)]


def test_registry_lists_the_built_in_nets() -> None:
    expected = {"gaussian_simpleconv64", "mlp", "mobilenetv2", "resnet18", "simpleconv64", "wrn28", "wrn28_2"}
    assert expected | {"wrn28_10"} <= set(NETS)
    assert GAUSSIAN == ["gaussian_simpleconv64"]


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("feature_dim", [None, 24])
@pytest.mark.parametrize("name", NETS)
def test_output_shape(name: str, feature_dim: int | None, in_channels: int) -> None:
    net = _build(name, in_channels=in_channels, feature_dim=feature_dim).eval()
    expected_dim = feature_dim or _case(name).natural_dim
    assert net.in_channels == in_channels
    assert net.feature_dim == expected_dim
    with torch.no_grad():
        out = net(_input(name, in_channels))
    assert out.shape == (B, expected_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NETS)
def test_stages_match_stage_dims(name: str) -> None:
    net = _build(name, feature_dim=24).eval()
    x = _input(name)
    with torch.no_grad():
        feature, stages = net.forward_stages(x)
        out = net(x)
    assert len(net.stage_dims) >= 1
    assert len(stages) == len(net.stage_dims)
    assert [tuple(s.shape) for s in stages] == [(B, d) for d in net.stage_dims]
    torch.testing.assert_close(feature, out)


@pytest.mark.parametrize("name", NETS)
def test_backward_reaches_every_parameter(name: str) -> None:
    net = _build(name, feature_dim=24).train()
    feature, stages = net.forward_stages(_input(name))
    loss = feature.square().mean() + sum(s.square().mean() for s in stages)
    if isinstance(net, GaussianEncoder):
        loss = loss + net.forward_gaussian(_input(name))[1].mean()
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("name", NETS)
def test_eval_is_deterministic_and_per_sample(name: str) -> None:
    net = _build(name).eval()
    x = _input(name)
    with torch.no_grad():
        first, stages1 = net.forward_stages(x)
        second, stages2 = net.forward_stages(x)
        alone = net(x[:1])
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(stages1, stages2, strict=True))
    # In eval mode BatchNorm must use running statistics: a sample's output ignores the rest of the batch.
    torch.testing.assert_close(alone, first[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_returns_mu_and_logvar(name: str) -> None:
    net = _build(name, feature_dim=5).eval()
    assert isinstance(net, GaussianEncoder)
    x = _input(name)
    with torch.no_grad():
        mu, logvar = net.forward_gaussian(x)
        out = net(x)
    assert mu.shape == logvar.shape == (B, 5)
    torch.testing.assert_close(out, mu)
    assert not torch.equal(mu, logvar)


def test_gaussian_logvar_is_clamped() -> None:
    net = create_net("gaussian_simpleconv64", in_channels=1, feature_dim=4, width=0.25)
    assert isinstance(net, GaussianEncoder)
    fc = net.get_submodule("fc")
    assert isinstance(fc, torch.nn.Linear)
    with torch.no_grad():
        fc.bias[4:] = 1e3
        _, high = net.forward_gaussian(torch.randn(2, 1, 64, 64))
        fc.bias[4:] = -1e3
        _, low = net.forward_gaussian(torch.randn(2, 1, 64, 64))
    assert torch.all(high == 10.0)
    assert torch.all(low == -10.0)


def test_simpleconv_accepts_inputs_larger_than_64() -> None:
    net = create_net("simpleconv64", in_channels=1, input_size=(96, 96), width=0.25)
    assert net(torch.randn(2, 1, 96, 96)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "kwargs", "params"),
    [
        # Reference counts without the classifier: kuangliu CIFAR ResNet-18, FixMatch WRN-28-2,
        # torchvision mobilenet_v2().features.
        ("resnet18", {}, 11_168_832),
        ("wrn28_2", {}, 1_466_320),
        ("mobilenetv2", {}, 2_223_872),
    ],
)
def test_full_width_matches_reference_size(name: str, kwargs: dict[str, Any], params: int) -> None:
    net = create_net(name, in_channels=3, **kwargs)
    assert sum(p.numel() for p in net.parameters()) == params


def test_mobilenet_last_conv_widens_only_above_width_one() -> None:
    assert create_net("mobilenetv2", in_channels=3, width=0.5).feature_dim == 1280
    assert create_net("mobilenetv2", in_channels=3, width=1.5).stage_dims[-1] == 1920


def test_mobilenet_imagenet_stem_downsamples_more() -> None:
    x = torch.randn(1, 3, 32, 32)
    seen: dict[bool, tuple[int, ...]] = {}
    for cifar_stem in (True, False):
        net = create_net("mobilenetv2", in_channels=3, width=0.25, cifar_stem=cifar_stem).eval()
        last = net.get_submodule("late")[-1]
        last.register_forward_hook(lambda _m, _i, out, c=cifar_stem: seen.__setitem__(c, tuple(out.shape)))
        with torch.no_grad():
            net(x)
    assert seen == {True: (1, 1280, 4, 4), False: (1, 1280, 1, 1)}


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(UnknownArchitectureError) as info:
        create_net("nope", in_channels=3)
    message = str(info.value)
    assert "'nope'" in message
    assert all(name in message for name in NETS)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("wrn28", {"depth": 27}),
        ("wrn28", {"depth": 4}),
        ("wrn28", {"k": 0}),
        ("simpleconv64", {"input_size": (32, 32)}),
        ("gaussian_simpleconv64", {"input_size": (64, 48)}),
        ("simpleconv64", {"width": 0.0}),
        ("resnet18", {"width": -1.0}),
        ("mobilenetv2", {"width": 0.0}),
    ],
)
def test_invalid_config_raises_config_error(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        create_net(name, in_channels=3, **kwargs)
