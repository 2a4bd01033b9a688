"""Frozen teachers: the pretrained network a factorization reads its tasks and features from.

Three sources, one interface (:class:`Teacher`):

- an **ONNX** file run by onnxruntime, with a mapping from logical output names to the graph's output names
  and optional feature outputs (:class:`OnnxTeacher`);
- a **TorchScript** file (:class:`TorchScriptTeacher`);
- a **registry architecture** with safetensors weights, as written by :func:`save_teacher` after
  :func:`kf_core.train.fit_teacher` (:class:`TorchTeacher`).

Teachers only run forward, in eval mode, without gradients. Nothing here unpickles: TorchScript archives are
checked to be zip files first and safetensors holds tensors only.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kf_core.errors import ConfigError, InputShapeError, ModelFileError, UnknownOutputError
from kf_core.export import export_module
from kf_core.factor import NetSpec
from kf_core.nets.base import Backbone
from kf_core.ort import create_session
from kf_core.parts import read_onnx
from kf_core.shapes import check_input_shape

__all__ = [
    "MultiHeadNet",
    "OnnxTeacher",
    "Teacher",
    "TeacherOutput",
    "TorchScriptTeacher",
    "TorchTeacher",
    "load_teacher",
    "save_teacher",
    "save_torchscript",
]

TEACHER_SPEC = "teacher.json"
TEACHER_WEIGHTS = "teacher.safetensors"
TEACHER_ONNX = "teacher.onnx"


@dataclass
class TeacherOutput:
    """Logits per output name, ``(B, K)``, and pooled stage features ``(B, C_l)`` (possibly none)."""

    logits: dict[str, torch.Tensor]
    features: list[torch.Tensor]


class Teacher:
    """A frozen network with named classification outputs."""

    input_shape: tuple[int, ...]  # shape of one input sample: (D,), (C, H, W), ...; -1 where any size fits
    output_sizes: dict[str, int]  # output name -> number of classes
    feature_dims: tuple[int, ...]  # widths of the pooled features it exposes
    class_names: dict[str, list[str]]  # output name -> class names (may be empty)

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> TeacherOutput:
        return self.forward(x)

    def to(self, device: torch.device | str) -> Teacher:
        return self

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise :class:`InputShapeError` unless data of per-sample ``shape`` fits this teacher."""
        check_input_shape(self.input_shape, shape, what="the teacher")

    def backbone_state(self) -> dict[str, torch.Tensor] | None:
        """The weights of the teacher's backbone module (its heads excluded), where the teacher keeps its modules:
        a CKN of the same architecture can start from them (``TrainConfig.ckn_init``). ``None`` for graphs that
        do not (ONNX folds BatchNorm into the convolutions, for one)."""
        return None


def _pool(t: torch.Tensor) -> torch.Tensor:
    # Spatial feature maps are pooled to vectors, like the paper's GAP neck.
    return t.mean(dim=tuple(range(2, t.ndim))) if t.ndim > 2 else t


class MultiHeadNet(nn.Module):
    """A backbone plus one linear head per output: the teachers ``fit_teacher`` trains.

    ``forward`` returns a flat tuple (head logits in order, then stage features) so that it exports to
    ONNX and TorchScript with plain named outputs.
    """

    def __init__(self, backbone: Backbone, heads: Mapping[str, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_names = list(heads)
        # Prefixed keys: a head named like an nn.Module attribute ("half", "type") must not clash.
        self.heads = nn.ModuleDict({f"head_{n}": nn.Linear(backbone.feature_dim, int(k)) for n, k in heads.items()})

    def num_classes(self, name: str) -> int:
        head = self.heads[f"head_{name}"]
        assert isinstance(head, nn.Linear)
        return head.out_features

    def forward_all(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        feat, stages = self.backbone.forward_stages(x)
        return {n: self.heads[f"head_{n}"](feat) for n in self.head_names}, stages

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, stages = self.forward_all(x)
        return (*[logits[n] for n in self.head_names], *stages)


class TorchTeacher(Teacher):
    """A :class:`MultiHeadNet` in memory (from ``fit_teacher`` or registry spec + safetensors)."""

    def __init__(
        self,
        net: MultiHeadNet,
        *,
        input_shape: Sequence[int],
        class_names: Mapping[str, list[str]] | None = None,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        self.net = net.eval().requires_grad_(False)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_sizes = {n: net.num_classes(n) for n in net.head_names}
        self.feature_dims = tuple(net.backbone.stage_dims)
        self.class_names = {k: list(v) for k, v in (class_names or {}).items()}
        self.spec = dict(spec or {})
        self._device = torch.device("cpu")

    def to(self, device: torch.device | str) -> TorchTeacher:
        self._device = torch.device(device)
        self.net.to(self._device)
        return self

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> TeacherOutput:
        logits, stages = self.net.forward_all(x.to(self._device))
        return TeacherOutput(logits=logits, features=[_pool(s) for s in stages])

    def backbone_state(self) -> dict[str, torch.Tensor] | None:
        return dict(self.net.backbone.state_dict())


class TorchScriptTeacher(Teacher):
    """A TorchScript module returning a tensor, a tuple/list of tensors, or a dict of tensors.

    ``outputs`` maps output names to dict keys or tuple positions; ``features`` names the extra outputs to use
    as stage features. TorchScript files do not record their input shape, so it must be given.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        input_shape: Sequence[int],
        outputs: Mapping[str, str | int],
        features: Sequence[str | int] = (),
        class_names: Mapping[str, list[str]] | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"TorchScript file {path} does not exist")
        if not zipfile.is_zipfile(path):
            # torch.jit.save writes a zip archive; anything else (a pickle, a state_dict) is refused unread.
            raise ModelFileError(
                f"{path.name} is not a TorchScript archive (expected a zip written by torch.jit.save); "
                "plain pickles and state_dicts are refused: export with torch.jit.script/trace and save"
            )
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
        except Exception as e:  # torch raises RuntimeError subclasses with long C++ traces
            raise ModelFileError(f"{path.name} could not be loaded as TorchScript: {str(e)[:300]}") from e
        if not outputs:
            raise ConfigError("a TorchScript teacher needs outputs={name: key or index}")
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise ConfigError(
                f"input_shape must be one sample's positive sizes, e.g. [64] or [3, 32, 32]; got {input_shape}"
            )
        self.outputs = dict(outputs)
        self.features = list(features)
        self.class_names = {k: list(v) for k, v in (class_names or {}).items()}
        probe = self._run(torch.zeros((2, *self.input_shape)))
        self.output_sizes = {n: int(probe.logits[n].shape[1]) for n in self.outputs}
        self.feature_dims = tuple(int(f.shape[1]) for f in probe.features)

    def _pick(self, raw: Any, key: str | int) -> torch.Tensor:
        try:
            if isinstance(raw, torch.Tensor):
                if key not in (0, "0"):
                    raise KeyError(key)
                return raw
            if isinstance(raw, dict):
                return raw[key]  # type: ignore[no-any-return]
            return raw[int(key)]  # type: ignore[no-any-return]
        except (KeyError, IndexError, ValueError):
            known = list(raw) if isinstance(raw, dict) else list(range(1 if torch.is_tensor(raw) else len(raw)))
            raise UnknownOutputError("TorchScript output", str(key), [str(k) for k in known]) from None

    @torch.no_grad()
    def _run(self, x: torch.Tensor) -> TeacherOutput:
        try:
            raw = self.module(x)
        except RuntimeError as e:
            raise InputShapeError(
                f"the TorchScript teacher failed on input of shape {tuple(x.shape)}: {str(e)[:300]}"
            ) from e
        logits = {n: self._pick(raw, k).float() for n, k in self.outputs.items()}
        return TeacherOutput(logits=logits, features=[_pool(self._pick(raw, k).float()) for k in self.features])

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        return self._run(x.cpu())

    def backbone_state(self) -> dict[str, torch.Tensor] | None:
        """A module traced or scripted from a kf teacher (:class:`MultiHeadNet`) keeps its ``backbone``."""
        backbone = getattr(self.module, "backbone", None)
        return None if backbone is None else dict(backbone.state_dict())


# Probability outputs are read as log(p + eps), which distill like logits (softmax gives p back, up to eps). The floor
# log(0.01) keeps logit matching from chasing log(1e-10)-sized values of classes the teacher rules out: below ~1 %
# they are noise. On the skl2onnx digits teacher, combined accuracy: 96.7 % with eps 1e-6, 97.6 % (= teacher) with 1e-2.
PROBABILITY_EPS = 1e-2

_FLOAT_TYPES = {1: np.float32, 11: np.float64, 10: np.float16}  # onnx.TensorProto FLOAT, DOUBLE, FLOAT16


class OnnxTeacher(Teacher):
    """An ONNX classifier run by onnxruntime: graphs from torch.onnx, skl2onnx, onnxmltools, tf2onnx, ...

    The graph takes one input of any rank, ``(batch, *sample_shape)``: vectors ``(N, D)``, images ``(N, C, H, W)``.
    ``outputs`` maps logical output names (what tasks refer to) to graph output names; ``None`` uses every float
    output not listed in ``features`` under its own name. Integer and string outputs (skl2onnx's ``label``) hold
    predicted classes, not per-class scores, and are never tasks. An output whose rows are probabilities (values
    in [0, 1] summing to 1: skl2onnx's ``probabilities``, a graph ending in a softmax) is read as log-probabilities
    ``log(p + 0.01)`` (see :attr:`probability_outputs` and ``PROBABILITY_EPS``), which distill like logits.
    A ZipMap output (skl2onnx's default: a list of ``{class: probability}`` maps) is read from the probability
    tensor that feeds the ZipMap, so converter graphs work unmodified.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        outputs: Mapping[str, str] | None = None,
        features: Sequence[str] = (),
        class_names: Mapping[str, list[str]] | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        model = read_onnx(Path(path))
        known = [o.name for o in model.graph.output]
        kinds = {o.name: _output_kind(o) for o in model.graph.output}
        unzipped = _unzip_maps(model)  # graph output name -> the probability tensor now read in its place
        kinds.update(dict.fromkeys(unzipped, "float"))
        explicit = outputs is not None
        if outputs is None:
            outputs = {n: n for n in known if kinds[n] == "float" and n not in set(features)}
        for name in [*outputs.values(), *features]:
            if name not in known:
                raise UnknownOutputError("ONNX output", name, known)
            if kinds.get(name) != "float":
                raise ConfigError(
                    f"ONNX output {name!r} holds {kinds.get(name)} values, not per-class scores (predicted labels are "
                    "not tasks); name an output of float scores, logits or probabilities "
                    f"(float outputs: {[n for n in known if kinds.get(n) == 'float'] or 'none'})"
                )
        if not outputs:
            raise ModelFileError(
                f"the teacher graph has no float output to read tasks from (outputs: {known}); "
                "export per-class scores, logits or probabilities"
            )
        init_names = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in init_names]
        if len(inputs) != 1:
            raise ModelFileError(f"the teacher graph must have exactly one input, it has {len(inputs)}")
        tensor_type = inputs[0].type.tensor_type
        dims = tensor_type.shape.dim
        if not inputs[0].type.HasField("tensor_type") or len(dims) < 2:
            raise InputShapeError(
                f"the teacher input {inputs[0].name!r} must be a tensor (batch, *sample_shape) such as (N, D) or "
                f"(N, C, H, W); the graph declares {len(dims)} dims"
            )
        if tensor_type.elem_type not in _FLOAT_TYPES:
            raise InputShapeError(
                f"the teacher input {inputs[0].name!r} must take floats; the graph declares element type "
                f"{tensor_type.elem_type} (convert with a float input type, e.g. skl2onnx FloatTensorType)"
            )
        self.input_name = inputs[0].name
        self._input_dtype = _FLOAT_TYPES[tensor_type.elem_type]
        self.input_shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])
        self.outputs = dict(outputs)  # logical name -> graph output name
        self._tensors = {k: unzipped.get(v, v) for k, v in outputs.items()}  # ... -> the tensor the session returns
        self._features = [unzipped.get(f, f) for f in features]
        self.features = list(features)
        self.class_names = {k: list(v) for k, v in (class_names or {}).items()}
        self.probability_outputs: frozenset[str] = frozenset()
        self.session = create_session(model.SerializeToString(), providers=providers)
        probe_shape = tuple(s if s > 0 else 64 for s in self.input_shape)
        noise = torch.randn((8, *probe_shape), generator=torch.Generator().manual_seed(0))
        probes = [torch.zeros((2, *probe_shape)), noise]
        raw = [self._run(p) for p in probes]
        for name in list(self.outputs):
            if raw[0][name].ndim != 2 or raw[0][name].shape[1] < 2:
                if explicit:
                    raise ConfigError(
                        f"ONNX output {self.outputs[name]!r} gives shape {tuple(raw[0][name].shape)} for a batch "
                        "of 2; a task output must give (batch, K) scores for K >= 2 classes"
                    )
                del self.outputs[name], self._tensors[name]
        if not self.outputs:
            raise ModelFileError(
                f"no output of the teacher graph gives (batch, K) class scores (outputs: {known}); "
                "export per-class scores, logits or probabilities"
            )
        self.probability_outputs = frozenset(n for n in self.outputs if all(_is_probability(r[n]) for r in raw))
        probe = self.forward(probes[0])
        self.output_sizes = {n: int(t.shape[1]) for n, t in probe.logits.items()}
        self.feature_dims = tuple(int(f.shape[1]) for f in probe.features)

    def _run(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        names = list(dict.fromkeys([*self._tensors.values(), *self._features]))
        feed = {self.input_name: x.detach().cpu().numpy().astype(self._input_dtype)}
        try:
            arrays = self.session.run(names, feed)
        except Exception as e:  # onnxruntime raises its own exception types for shape/type errors
            raise InputShapeError(f"the ONNX teacher failed on input of shape {tuple(x.shape)}: {e}") from e
        by_name = dict(zip(names, arrays, strict=True))
        out = {k: np.asarray(by_name[v], dtype=np.float32) for k, v in self._tensors.items()}
        out.update({f"\0feat{i}": np.asarray(by_name[f], dtype=np.float32) for i, f in enumerate(self._features)})
        return out

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        raw = self._run(x)
        logits: dict[str, torch.Tensor] = {}
        for k in self.outputs:
            v = raw[k]
            if k in self.probability_outputs:
                v = np.log(np.clip(v, 0.0, 1.0) + np.float32(PROBABILITY_EPS))
            logits[k] = torch.from_numpy(v)
        feats = [_pool(torch.from_numpy(raw[f"\0feat{i}"])) for i in range(len(self.features))]
        return TeacherOutput(logits=logits, features=feats)


def _output_kind(value_info: Any) -> str:
    """``float`` for float tensors, else a word for what the output holds (``int64``, ``string``, ``sequence``)."""
    t = value_info.type
    if t.HasField("tensor_type"):
        elem = t.tensor_type.elem_type
        return "float" if elem in _FLOAT_TYPES else onnx.TensorProto.DataType.Name(elem).lower()
    return t.WhichOneof("value") or "unknown"


def _unzip_maps(model: Any) -> dict[str, str]:
    """Replace every graph output made by a ZipMap node with the probability tensor the ZipMap reads.

    skl2onnx (default options) ends classifiers in ``ZipMap``, which turns the (N, K) probability tensor into a list
    of ``{class: probability}`` maps; the tensor is what distillation needs. Returns ``{graph output: tensor name}``.
    """
    zipmaps = {n.output[0]: n for n in model.graph.node if n.op_type == "ZipMap" and n.output}
    renamed: dict[str, str] = {}
    for i, out in enumerate(list(model.graph.output)):
        node = zipmaps.get(out.name)
        if node is None:
            continue
        tensor = node.input[0]
        renamed[out.name] = tensor
        model.graph.output[i].CopyFrom(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
        model.graph.node.remove(node)
    return renamed


def _is_probability(v: np.ndarray) -> bool:
    """Rows of ``v`` are probability vectors: values in [0, 1] that sum to 1."""
    if v.ndim != 2 or v.size == 0 or not np.isfinite(v).all():
        return False
    return bool(v.min() >= 0.0 and v.max() <= 1.0 and np.allclose(v.sum(axis=1), 1.0, atol=1e-3))


def save_teacher(teacher: TorchTeacher, out_dir: str | Path, *, onnx: bool = True) -> Path:
    """Write ``teacher.json`` + ``teacher.safetensors`` (and ``teacher.onnx``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = dict(teacher.spec)
    spec.update(
        format="kf-teacher/1",
        input_shape=list(teacher.input_shape),
        heads=teacher.output_sizes,
        class_names=teacher.class_names,
        onnx_outputs=[*teacher.net.head_names, *[f"feat_{i}" for i in range(len(teacher.feature_dims))]],
    )
    save_file({k: v.contiguous() for k, v in teacher.net.state_dict().items()}, str(out / TEACHER_WEIGHTS))
    (out / TEACHER_SPEC).write_text(json.dumps(spec, indent=2))
    if onnx:
        sample = torch.zeros((2, *teacher.input_shape))
        export_module(
            teacher.net.cpu(), (sample,), out / TEACHER_ONNX, input_names=["x"], output_names=spec["onnx_outputs"]
        )
    return out


def _load_registry_teacher(spec_path: Path) -> TorchTeacher:
    try:
        spec = json.loads(spec_path.read_text())
        backbone_spec = NetSpec.from_json(spec["backbone"])
        shape = tuple(int(v) for v in spec["input_shape"])
        heads = {str(k): int(v) for k, v in spec["heads"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{spec_path} is not a valid teacher spec ({type(e).__name__}: {e})") from e
    backbone = backbone_spec.build(input_shape=shape, feature_dim=spec.get("feature_dim"))
    net = MultiHeadNet(backbone, heads)
    weights = spec_path.with_name(TEACHER_WEIGHTS)
    try:
        state = load_file(str(weights))
        net.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as e:
        raise ModelFileError(f"{weights} does not hold weights for this teacher spec: {str(e)[:300]}") from e
    return TorchTeacher(net, input_shape=shape, class_names=spec.get("class_names"), spec=spec)


def load_teacher(
    path: str | Path,
    *,
    outputs: Mapping[str, str | int] | None = None,
    features: Sequence[str | int] | None = None,
    input_shape: Sequence[int] | None = None,
    class_names: Mapping[str, list[str]] | None = None,
    format: str | None = None,
) -> Teacher:
    """Load a teacher from a directory written by :func:`save_teacher`, an ``.onnx`` file or a TorchScript file.

    ``format`` (``"onnx"`` or ``"torchscript"``) overrides the file suffix. For ONNX, ``features`` defaults to graph
    outputs named ``feat_*``, and ``input_shape``, when given, must fit the graph's input (see
    :func:`kf_core.shapes.check_input_shape`); for TorchScript, ``outputs`` and ``input_shape`` are required.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / TEACHER_SPEC).exists():
            raise ModelFileError(f"{p} holds no {TEACHER_SPEC}; pass a teacher directory, .onnx or TorchScript file")
        return _load_registry_teacher(p / TEACHER_SPEC)
    if not p.is_file():
        raise ModelFileError(f"teacher file {p} does not exist")
    if format not in (None, "onnx", "torchscript"):
        raise ConfigError(f"unknown teacher format {format!r}; use 'onnx' or 'torchscript'")
    if format == "onnx" or (format is None and p.suffix == ".onnx"):
        if features is None:
            features = [o.name for o in read_onnx(p).graph.output if o.name.startswith("feat_")]
        teacher = OnnxTeacher(
            p,
            outputs={k: str(v) for k, v in outputs.items()} if outputs is not None else None,
            features=[str(f) for f in features],
            class_names=class_names,
        )
        if input_shape is not None:
            teacher.check_input(input_shape)
        return teacher
    if input_shape is None or not outputs:
        raise ConfigError(
            "a TorchScript teacher needs input_shape (one sample's shape: [D] for vectors, [C, H, W] for images) "
            "and outputs={name: key or index}: TorchScript files do not record them"
        )
    return TorchScriptTeacher(
        p, input_shape=input_shape, outputs=outputs, features=features or (), class_names=class_names
    )


def save_torchscript(teacher: Teacher, path: str | Path) -> dict[str, Any]:
    """Trace ``teacher``'s network (a teacher fitted by kf: :class:`TorchTeacher`) to a TorchScript file; returns
    what loading it needs (``input_shape``, ``outputs`` as tuple positions, ``features``), e.g. for
    ``POST /v1/teachers``. Unlike an ONNX export, the file keeps the backbone module, so a CKN of its architecture
    can start from it (``TrainConfig.ckn_init``)."""
    if not isinstance(teacher, TorchTeacher):
        raise ConfigError(f"only a teacher fitted by kf can be traced to TorchScript, not a {type(teacher).__name__}")
    net = teacher.net.cpu()
    sample = torch.zeros((2, *teacher.input_shape))
    traced = torch.jit.trace(net, sample)  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(path))
    heads = len(net.head_names)
    return {
        "input_shape": list(teacher.input_shape),
        "outputs": {name: i for i, name in enumerate(net.head_names)},
        "features": [heads + i for i in range(len(teacher.feature_dims))],
    }
