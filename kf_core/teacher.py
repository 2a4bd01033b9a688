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
import torch
from torch import nn

from kf_core.errors import ConfigError, InputShapeError, ModelFileError, UnknownOutputError
from kf_core.factor import NetSpec
from kf_core.nets.base import Backbone

__all__ = [
    "MultiHeadNet",
    "OnnxTeacher",
    "Teacher",
    "TeacherOutput",
    "TorchScriptTeacher",
    "TorchTeacher",
    "load_teacher",
    "save_teacher",
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

    input_shape: tuple[int, int, int]  # (C, H, W) of one input
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
        """Raise :class:`InputShapeError` unless data of per-sample ``shape`` (C, H, W) fits this teacher."""
        got = tuple(int(s) for s in shape)
        want = self.input_shape
        if len(got) != len(want) or any(w > 0 and g != w for g, w in zip(got, want, strict=True)):
            raise InputShapeError(
                f"the teacher expects inputs of shape (C, H, W) = {want} but the data has {got}; "
                "resize the data or use a teacher trained on this input size"
            )


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
        self.input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
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
        self.input_shape = tuple(int(s) for s in input_shape)  # type: ignore[assignment]
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


class OnnxTeacher(Teacher):
    """An ONNX classifier run by onnxruntime.

    ``outputs`` maps logical output names (what tasks refer to) to graph output names; ``None`` uses every
    graph output not listed in ``features`` under its own name.
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
        from kf_core.assemble import read_onnx
        from kf_core.ort import create_session

        model = read_onnx(Path(path))
        graph_outputs = [o.name for o in model.graph.output]
        if outputs is None:
            outputs = {n: n for n in graph_outputs if n not in set(features)}
        for name in [*outputs.values(), *features]:
            if name not in graph_outputs:
                raise UnknownOutputError("ONNX output", name, graph_outputs)
        init_names = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in init_names]
        if len(inputs) != 1:
            raise ModelFileError(f"the teacher graph must have exactly one input, it has {len(inputs)}")
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) != 4:
            raise InputShapeError(f"the teacher input must be (batch, C, H, W); the graph declares {len(dims)} dims")
        self.input_name = inputs[0].name
        self.input_shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:])  # type: ignore[assignment]
        self.outputs = dict(outputs)
        self.features = list(features)
        self.class_names = {k: list(v) for k, v in (class_names or {}).items()}
        self.session = create_session(model.SerializeToString(), providers=providers)
        probe_shape = tuple(s if s > 0 else 64 for s in self.input_shape)
        probe = self.forward(torch.zeros((2, *probe_shape)))
        self.output_sizes = {n: int(t.shape[1]) for n, t in probe.logits.items()}
        self.feature_dims = tuple(int(f.shape[1]) for f in probe.features)

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        names = [*self.outputs.values(), *self.features]
        try:
            arrays = self.session.run(names, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})
        except Exception as e:  # onnxruntime raises its own exception types for shape/type errors
            raise InputShapeError(f"the ONNX teacher failed on input of shape {tuple(x.shape)}: {e}") from e
        by_name = dict(zip(names, arrays, strict=True))
        logits = {k: torch.from_numpy(np.asarray(by_name[v], dtype=np.float32)) for k, v in self.outputs.items()}
        feats = [_pool(torch.from_numpy(np.asarray(by_name[f], dtype=np.float32))) for f in self.features]
        return TeacherOutput(logits=logits, features=feats)


def save_teacher(teacher: TorchTeacher, out_dir: str | Path, *, onnx: bool = True) -> Path:
    """Write ``teacher.json`` + ``teacher.safetensors`` (and ``teacher.onnx``) into ``out_dir``."""
    from safetensors.torch import save_file

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
        from kf_core.export import export_module

        sample = torch.zeros((2, *teacher.input_shape))
        export_module(
            teacher.net.cpu(), (sample,), out / TEACHER_ONNX, input_names=["x"], output_names=spec["onnx_outputs"]
        )
    return out


def _load_registry_teacher(spec_path: Path) -> TorchTeacher:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        spec = json.loads(spec_path.read_text())
        backbone_spec = NetSpec.from_json(spec["backbone"])
        c, h, w = (int(v) for v in spec["input_shape"])
        heads = {str(k): int(v) for k, v in spec["heads"].items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{spec_path} is not a valid teacher spec ({type(e).__name__}: {e})") from e
    backbone = backbone_spec.build(in_channels=c, input_size=(h, w), feature_dim=spec.get("feature_dim"))
    net = MultiHeadNet(backbone, heads)
    weights = spec_path.with_name(TEACHER_WEIGHTS)
    try:
        state = load_file(str(weights))
        net.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as e:
        raise ModelFileError(f"{weights} does not hold weights for this teacher spec: {str(e)[:300]}") from e
    return TorchTeacher(net, input_shape=(c, h, w), class_names=spec.get("class_names"), spec=spec)


def load_teacher(
    path: str | Path,
    *,
    outputs: Mapping[str, str] | None = None,
    features: Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    class_names: Mapping[str, list[str]] | None = None,
) -> Teacher:
    """Load a teacher from a directory written by :func:`save_teacher`, an ``.onnx`` file or a TorchScript file.

    For ONNX, ``features`` defaults to graph outputs named ``feat_*``; for TorchScript, ``outputs`` and
    ``input_shape`` are required.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / TEACHER_SPEC).exists():
            raise ModelFileError(f"{p} holds no {TEACHER_SPEC}; pass a teacher directory, .onnx or TorchScript file")
        return _load_registry_teacher(p / TEACHER_SPEC)
    if not p.is_file():
        raise ModelFileError(f"teacher file {p} does not exist")
    if p.suffix == ".onnx":
        if features is None:
            from kf_core.assemble import read_onnx

            features = [o.name for o in read_onnx(p).graph.output if o.name.startswith("feat_")]
        return OnnxTeacher(p, outputs=outputs, features=features, class_names=class_names)
    if input_shape is None or not outputs:
        raise ConfigError("a TorchScript teacher needs input_shape=(C, H, W) and outputs={name: key or index}")
    return TorchScriptTeacher(
        p, input_shape=input_shape, outputs=outputs, features=features or (), class_names=class_names
    )
