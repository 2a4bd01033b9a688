"""Export to ONNX: every registered net, the verification that guards it, and the factor-set layout."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from kf_core.assemble import assemble, load_parts
from kf_core.errors import ExportMismatchError, InputShapeError
from kf_core.export import export_factor_set, export_module
from kf_core.factor import FactorConfig, FactorNet, NetSpec
from kf_core.nets import create_net, list_nets
from kf_core.ort import create_session
from kf_core.tasks import TaskSpec


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # These nets are tiny: with two intra-op threads on a busy 2-core machine every layer waits at a thread
    # barrier for a descheduled worker, and mobilenetv2's forward takes 3 s instead of 30 ms.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Smallest input each net accepts; nets not listed get 3x16x16 (all CIFAR-style nets pool to one vector).
_SHAPES = {"mlp": (1, 8, 8), "simpleconv64": (1, 64, 64), "gaussian_simpleconv64": (1, 64, 64)}


def _tiny_net(name: str) -> tuple[nn.Module, tuple[int, int, int]]:
    c, h, w = _SHAPES.get(name, (3, 16, 16))
    torch.manual_seed(0)
    net = create_net(name, in_channels=c, input_size=(h, w), feature_dim=8, width=0.25)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding BN into Conv is really tested
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net, (c, h, w)


@pytest.mark.parametrize("name", list_nets())
def test_every_registered_net_exports_with_a_dynamic_batch(name: str, tmp_path: Path) -> None:
    net, shape = _tiny_net(name)
    model = export_module(net, (torch.randn(2, *shape),), tmp_path / "net.onnx", input_names=["x"], output_names=["z"])
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert onnx.load(tmp_path / "net.onnx") == model  # what was verified is what was written, weights inline
    session = create_session(tmp_path / "net.onnx")
    for batch in (1, 3):
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            want = net.eval()(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5


class _ShapeBranch(nn.Module):
    """Python control flow on the batch size: tracing bakes in the branch the sample took."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.shape[0] == 1 else x * 3


def test_a_graph_that_disagrees_with_torch_is_refused_and_not_written(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    with pytest.warns(torch.jit.TracerWarning), pytest.raises(ExportMismatchError, match="max abs difference"):
        export_module(_ShapeBranch(), (torch.ones(1, 4),), path, input_names=["x"], output_names=["y"])
    assert not path.exists()
    assert not list(tmp_path.iterdir())  # no temp file left behind either


def test_atol_is_the_bar(tmp_path: Path) -> None:
    class Exp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.exp()  # ORT and torch round exp differently in the last bit for ~6% of these inputs

    x = (torch.rand(16, 1024, generator=torch.Generator().manual_seed(0)) * 5,)
    export_module(Exp(), x, tmp_path / "ok.onnx", input_names=["x"], output_names=["y"], atol=1e-3)
    with pytest.raises(ExportMismatchError, match=r"exceeds 0 x max\(1, largest \|output\|"):
        export_module(Exp(), x, tmp_path / "strict.onnx", input_names=["x"], output_names=["y"], atol=0.0)


def test_export_uses_eval_mode_and_restores_train_mode(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.9), nn.BatchNorm1d(4)).train()
    model = export_module(net, (torch.randn(3, 4),), tmp_path / "d.onnx", input_names=["x"], output_names=["y"])
    assert net.training
    assert "Dropout" not in {n.op_type for n in model.graph.node}


def test_factor_set_manifest_and_hashes(factor_set: tuple[Path, dict[str, Any]], factor_net: FactorNet) -> None:
    out, manifest = factor_set
    shape = factor_net.input_shape
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["format"] == "kf-factor-set/1"
    assert manifest["input"] == {"name": "x", "shape": [None, *shape], "dtype": "float32"}
    assert manifest["feature_dim"] == factor_net.feature_dim
    assert manifest["opset"] == 18
    assert list(manifest["tasks"]) == ["low", "high", "seven", "parity", "size"]  # order preserved
    entries = [manifest["ckn"], *manifest["tasks"].values()]
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", *(e["file"] for e in entries)])
    for entry in entries:
        assert entry["sha256"] == hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest()
    assert manifest["tasks"]["high"] == {
        "file": "task_high.onnx",
        "sha256": manifest["tasks"]["high"]["sha256"],
        "output": "digit",
        "classes": [5, 6, 7, 8, 9],
        "class_names": ["five", "six", "seven", "eight", "nine"],
        "num_classes": 5,
    }
    assert manifest["tasks"]["size"]["classes"] == [0, 1, 2]
    assert manifest["tasks"]["size"]["class_names"] == ["small", "medium", "large"]
    ckn = onnx.load(out / "ckn.onnx")
    task = onnx.load(out / "task_low.onnx")
    assert [v.name for v in ckn.graph.input] == ["x"] and [v.name for v in ckn.graph.output] == ["z_c"]
    assert [v.name for v in task.graph.input] == ["x", "z_c"] and [v.name for v in task.graph.output] == ["logits"]


def test_factor_set_default_class_names_and_shape_check(factor_net: FactorNet, tmp_path: Path) -> None:
    manifest = export_factor_set(factor_net, tmp_path, sample=torch.randn(2, *factor_net.input_shape))
    assert manifest["tasks"]["seven"]["class_names"] == ["7"]
    assert manifest["tasks"]["parity"]["classes"] == [0, 1]
    with pytest.raises(InputShapeError, match="takes"):
        export_factor_set(factor_net, tmp_path / "bad", sample=torch.randn(2, 1, 9, 9))


def test_export_leaves_a_batchnorm_factor_network_in_eval_mode(tmp_path: Path) -> None:
    # Regression: exporting a part (a fresh wrapper, in train mode) used to "restore" the shared CKN to train
    # mode, so BatchNorm then used batch statistics and the torch outputs no longer matched the exported graph.
    torch.manual_seed(0)
    tasks = [TaskSpec(name="a", output="a"), TaskSpec(name="b", output="b")]
    model = FactorNet(
        input_shape=(1, 64, 64),
        tasks=tasks,
        num_classes={"a": 3, "b": 4},
        config=FactorConfig(
            ckn=NetSpec("simpleconv64", {"width": 0.25, "batchnorm": True}),
            tsn=NetSpec("gaussian_simpleconv64", {"width": 0.25, "batchnorm": True}),
            feature_dim=8,
        ),
    )
    model.train()
    for _ in range(3):  # move the running statistics away from their initial values
        model.forward_train(torch.randn(16, 1, 64, 64) * 2 + 1)
    model.eval()
    export_factor_set(model, tmp_path / "parts", sample=torch.randn(4, 1, 64, 64))
    assert not any(m.training for m in model.modules())
    x = torch.randn(6, 1, 64, 64)
    with torch.no_grad():
        want = model(x)
    graph = assemble(load_parts(tmp_path / "parts"), ["a", "b"])
    got = create_session(graph.SerializeToString()).run(["logits_a", "logits_b"], {"x": x.numpy()})
    assert max(float(abs(g - want[n].numpy()).max()) for g, n in zip(got, ["a", "b"], strict=True)) <= 1e-5
