"""Assembly: every task subset reproduces the factor networks; errors say what is wrong; no torch needed."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from kf_core import parts as parts_module
from kf_core.assemble import assemble, assemble_session, assemble_to_file, load_parts, read_onnx, routed_graph
from kf_core.errors import ConfigError, EmptyTaskListError, ModelFileError, UnknownTaskError
from kf_core.export import export_factor_set
from kf_core.factor import FactorConfig, FactorNet, NetSpec
from kf_core.ort import create_session
from kf_core.parts import FactorParts
from kf_core.predict import describe_assembly, predict_array, prediction_json
from kf_core.tasks import TaskSpec, check_task_names

FactorSet = tuple[Path, dict[str, Any]]
SUBSETS = [list(c) for k in range(1, 6) for c in itertools.combinations(range(5), k)]
ATOL = 1e-5


@pytest.fixture()
def parts(factor_set: FactorSet) -> FactorParts:
    return load_parts(factor_set[0], cache=False)


@pytest.fixture()
def copy_dir(factor_set: FactorSet, tmp_path: Path) -> Path:
    """A private copy of the factor set, free to damage."""
    return Path(shutil.copytree(factor_set[0], tmp_path / "copy"))


def _run(session: Any, x: torch.Tensor) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"x": x.numpy()}), strict=True))


def test_all_31_subsets_reproduce_the_factor_networks(
    parts: FactorParts, factor_net: FactorNet, inputs: torch.Tensor
) -> None:
    with torch.no_grad():
        want = {k: v.numpy() for k, v in factor_net(inputs).items()}
    names = factor_net.task_names
    alone = {n: _run(assemble_session(parts, [n]), inputs)[f"logits_{n}"] for n in names}
    assert len(SUBSETS) == 31
    for subset in SUBSETS:
        tasks = [names[i] for i in subset]
        served = _run(assemble_session(parts, tasks), inputs)
        portable_model = assemble(parts, tasks)
        portable = _run(create_session(portable_model), inputs)
        expected_outputs = [f"{kind}_{t}" for t in tasks for kind in ("logits", "probs")]
        assert [o.name for o in portable_model.graph.output] == expected_outputs
        assert list(served) == expected_outputs
        for t in tasks:
            for out in (served, portable):
                logits, probs = out[f"logits_{t}"], out[f"probs_{t}"]
                assert np.abs(logits - want[t]).max() <= ATOL, (tasks, t)
                assert np.abs(logits - alone[t]).max() <= ATOL, (tasks, t)
                assert np.abs(probs.sum(axis=1) - 1).max() <= 1e-6
                assert np.abs(probs - torch.softmax(torch.from_numpy(logits), 1).numpy()).max() <= 1e-6


def test_the_ckn_runs_once(parts: FactorParts) -> None:
    model = assemble(parts, ["low", "high", "parity"])
    ckn_nodes = len(parts.ckn.graph.node)
    assert sum(n.name.startswith("_ckn/") for n in model.graph.node) == ckn_nodes
    for t in ("low", "high", "parity"):
        assert sum(n.name.startswith(f"{t}/") for n in model.graph.node) == len(parts.tasks[t].graph.node)
    assert [i.name for i in model.graph.input] == ["x"]


def test_the_routed_graph_runs_each_task_over_exactly_the_rows_it_is_given(
    parts: FactorParts, factor_net: FactorNet, inputs: torch.Tensor
) -> None:
    with torch.no_grad():
        want = {k: v.numpy() for k, v in factor_net(inputs).items()}
    model = onnx.load_from_string(routed_graph(parts))
    names = factor_net.task_names
    assert [i.name for i in model.graph.input] == ["x", *(f"rows_{n}" for n in names)]
    assert sum(n.name.startswith("_ckn/") for n in model.graph.node) == len(parts.ckn.graph.node)  # the CKN once
    session = create_session(model)
    n = len(inputs)
    rng = np.random.default_rng(0)
    for trial in range(8):  # any rows: none, some, repeated, out of order, every one
        rows = {t: rng.choice(n, size=int(rng.integers(0, n + 2)), replace=True) for t in names}
        rows[names[trial % len(names)]] = np.arange(n)[::-1]
        feed = {"x": inputs.numpy(), **{f"rows_{t}": r.astype(np.int64) for t, r in rows.items()}}
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
        for t in names:
            logits, probs = outputs[f"logits_{t}"], outputs[f"probs_{t}"]
            assert logits.shape == (len(rows[t]), want[t].shape[1])
            assert np.abs(logits - want[t][rows[t]]).max(initial=0) <= ATOL, (trial, t)
            assert np.abs(probs - torch.softmax(torch.from_numpy(logits), 1).numpy()).max(initial=0) <= 1e-6


@pytest.mark.parametrize(
    ("ckn", "tsn"),
    [
        ("simpleconv64", "gaussian_simpleconv64"),
        ("resnet18", "resnet18"),
        ("wrn28", "wrn28"),
        ("mobilenetv2", "mobilenetv2"),
    ],
)
def test_every_architecture_runs_a_task_over_no_rows(ckn: str, tsn: str, tmp_path: Path) -> None:
    """A task nobody in a batch asked for runs over an empty batch: every registered architecture must take one
    (convolutions, pooling and reshapes over 0 rows) and give 0 rows back, the other tasks unaffected."""
    torch.manual_seed(0)
    small = {"width": 0.25} if ckn != "simpleconv64" else {"width": 0.25, "batchnorm": True}
    tasks = [TaskSpec("a", "a"), TaskSpec("b", "b")]
    net = FactorNet(
        input_shape=(1, 64, 64),
        tasks=tasks,
        num_classes={"a": 3, "b": 4},
        config=FactorConfig(ckn=NetSpec(ckn, small), tsn=NetSpec(tsn, {"width": 0.25}), feature_dim=8),
    ).eval()
    x = torch.rand(3, 1, 64, 64)
    export_factor_set(net, tmp_path / "parts", sample=x)
    session = create_session(routed_graph(load_parts(tmp_path / "parts", cache=False)))
    feed = {"x": x.numpy(), "rows_a": np.array([2, 0], dtype=np.int64), "rows_b": np.zeros(0, dtype=np.int64)}
    logits_a, _, logits_b, probs_b = session.run(None, feed)
    with torch.no_grad():
        want = net(x)["a"].numpy()
    assert logits_b.shape == probs_b.shape == (0, 4)
    assert np.abs(logits_a - want[[2, 0]]).max() <= 1e-4


def test_combined_classifier_is_one_softmax_over_the_union(parts: FactorParts, inputs: torch.Tensor) -> None:
    for build in (
        lambda: assemble_session(parts, ["high", "low"], combined=True),
        lambda: create_session(assemble(parts, ["high", "low"], combined=True)),
    ):
        out = _run(build(), inputs)
        logits = np.concatenate([out["logits_high"], out["logits_low"]], axis=1)
        assert np.abs(out["logits_combined"] - logits).max() == 0
        softmax = torch.softmax(torch.from_numpy(logits), 1).numpy()
        assert np.abs(out["probs_combined"] - softmax).max() <= 1e-6
    props = {p.key: p.value for p in assemble(parts, ["high", "low"], combined=True).metadata_props}
    assert json.loads(props["combined_classes"]) == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert json.loads(props["combined_class_names"])[:2] == ["five", "six"]
    assert json.loads(props["kf_assembly"])["combined"]["classes"] == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]


def test_combined_is_refused_across_outputs_and_for_overlapping_classes(parts: FactorParts) -> None:
    with pytest.raises(ConfigError, match="one teacher output"):
        assemble(parts, ["low", "parity"], combined=True)
    with pytest.raises(ConfigError, match="one teacher output"):
        assemble_session(parts, ["low", "parity"], combined=True)
    with pytest.raises(ConfigError, match="disjoint"):
        assemble(parts, ["high", "seven"], combined=True)


def test_description_in_metadata(parts: FactorParts, factor_set: FactorSet) -> None:
    model = assemble(parts, ["size", "low"], probabilities=False)
    assert [o.name for o in model.graph.output] == ["logits_size", "logits_low"]
    desc = json.loads({p.key: p.value for p in model.metadata_props}["kf_assembly"])
    assert desc["source_manifest_sha256"] == parts.manifest_sha256
    assert [t["name"] for t in desc["tasks"]] == ["size", "low"]
    assert desc["tasks"][1]["classes"] == [0, 1, 2, 3, 4]
    assert desc["tasks"][1]["class_names"] == factor_set[1]["tasks"]["low"]["class_names"]
    meta = assemble_session(parts, ["size", "low"]).get_modelmeta().custom_metadata_map
    assert json.loads(meta["kf_assembly"])["tasks"] == [{**t, "probs": f"probs_{t['name']}"} for t in desc["tasks"]]


def test_assemble_to_file(factor_set: FactorSet, tmp_path: Path, inputs: torch.Tensor) -> None:
    model = assemble_to_file(factor_set[0], ["parity"], tmp_path / "a.onnx")
    assert onnx.load(tmp_path / "a.onnx") == model
    assert _run(create_session(tmp_path / "a.onnx"), inputs)["probs_parity"].shape == (5, 2)


@pytest.mark.parametrize(
    ("tasks", "error", "match"),
    [
        ([], EmptyTaskListError, "at least one of low, high"),
        (["low", "nope"], UnknownTaskError, "known tasks: high, low, parity, seven, size"),
        (["low", "low"], ConfigError, "listed twice"),
        ("low", ConfigError, "list of task names"),
    ],
)
def test_bad_task_lists(parts: FactorParts, tasks: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        assemble(parts, tasks)
    with pytest.raises(error, match=match):
        assemble_session(parts, tasks)
    with pytest.raises(error, match=match):  # the one check, which the service's routes call too
        check_task_names(tasks, parts.task_names)


def test_combined_over_two_outputs_is_refused(parts: FactorParts) -> None:
    with pytest.raises(ConfigError, match="class subsets of one teacher output"):
        assemble(parts, ["size", "low"], combined=True)


def test_the_description_names_every_head_and_predictions_follow_it(parts: FactorParts, inputs: torch.Tensor) -> None:
    session = assemble_session(parts, ["low", "high"], combined=True)
    desc = describe_assembly(session)
    assert (desc.input_name, desc.input_shape[0]) == ("x", None)
    assert [(h.name, h.logits, h.probs) for h in desc.heads] == [
        ("low", "logits_low", "probs_low"),
        ("high", "logits_high", "probs_high"),
        ("combined", "logits_combined", "probs_combined"),
    ]
    low, high = (parts.manifest["tasks"][n]["class_names"] for n in ("low", "high"))
    assert desc.heads[2].class_names == [*low, *high]
    served = _run(session, inputs)
    got = predict_array(session, inputs.numpy())
    for head in desc.heads:
        p = served[f"probs_{head.name}"]
        want = prediction_json(p, head.class_names)
        assert got[head.name]["labels"] == want["labels"] == p.argmax(axis=1).tolist()
        assert got[head.name]["class_names"] == want["class_names"]
        np.testing.assert_allclose(got[head.name]["probabilities"], p, atol=1e-5)


def test_a_graph_without_a_description_is_refused(parts: FactorParts) -> None:
    with pytest.raises(ModelFileError, match="no kf assembly description"):
        describe_assembly(create_session(parts.ckn.SerializeToString()))


def test_a_flipped_byte_is_caught(copy_dir: Path) -> None:
    path = copy_dir / "task_high.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"task_high\.onnx has sha256 .* manifest says"):
        load_parts(copy_dir)


def test_non_onnx_bytes_with_a_matching_hash_are_caught(copy_dir: Path) -> None:
    (copy_dir / "task_low.onnx").write_bytes(b"definitely not a protobuf \xff\xfe")
    manifest = json.loads((copy_dir / "manifest.json").read_text())
    manifest["tasks"]["low"]["sha256"] = hashlib.sha256((copy_dir / "task_low.onnx").read_bytes()).hexdigest()
    (copy_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=r"task_low\.onnx is not"):
        load_parts(copy_dir)


def test_missing_files_are_caught(copy_dir: Path, tmp_path: Path) -> None:
    (copy_dir / "ckn.onnx").unlink()
    with pytest.raises(ModelFileError, match=r"cannot read .*ckn\.onnx"):
        load_parts(copy_dir)
    with pytest.raises(ModelFileError, match=r"manifest\.json"):
        load_parts(tmp_path / "nowhere")


def test_files_written_moments_ago_are_verified_on_every_load(copy_dir: Path) -> None:
    assert load_parts(copy_dir) is not load_parts(copy_dir)


def test_cached_parts_are_reused_until_a_file_changes(copy_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parts_module, "_RACY_NS", 0)  # trust files of any age: we control the edits here
    first = load_parts(copy_dir)
    assert load_parts(copy_dir) is first
    time.sleep(0.05)  # past the file system's timestamp granularity
    path = copy_dir / "task_size.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        load_parts(copy_dir)


def test_assembly_never_imports_torch(factor_set: FactorSet) -> None:
    code = (
        "import sys, numpy as np\n"
        "from kf_core.assemble import load_parts, assemble, assemble_session\n"
        f"parts = load_parts({str(factor_set[0])!r})\n"
        "assemble(parts, ['low', 'size'], combined=False)\n"
        "s = assemble_session(parts, ['low', 'high'], combined=True)\n"
        "s.run(None, {'x': np.zeros((2, 1, 8, 8), np.float32)})\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_read_onnx_checks_what_it_reads(factor_set: FactorSet, tmp_path: Path) -> None:
    assert [o.name for o in read_onnx(factor_set[0] / "ckn.onnx").graph.output] == ["z_c"]
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a protobuf \xff" * 10)
    with pytest.raises(ModelFileError, match=r"junk\.onnx is not"):
        read_onnx(tmp_path / "junk.onnx")
    dangling = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["nowhere"], ["y"])],
            "g",
            [],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
    )
    (tmp_path / "dangling.onnx").write_bytes(dangling.SerializeToString())
    with pytest.raises(ModelFileError, match=r"dangling\.onnx is not a valid ONNX model"):
        read_onnx(tmp_path / "dangling.onnx")
