"""Teacher models: validate an uploaded ONNX or TorchScript file against its JSON spec, and open stored ones.

Validation loads the model exactly as a job will (:func:`open_teacher`), so a teacher the catalog accepts is a
teacher a worker can run. The format comes from the bytes, never the file name: TorchScript archives are zip
files (anything else, such as a pickle renamed ``.pt``, is refused unread); everything else must parse as ONNX
and pass ``onnx.checker`` (full check, with shape inference).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from sqlalchemy.orm import Session

from kf_core import TaskSpec, load_teacher, validate_tasks
from service.catalog import queries as catalog
from service.catalog.artifacts import ArtifactWriter
from service.catalog.models import Teacher
from service.errors import ConflictError, InvalidInputError
from service.schemas import TeacherInfo, TeacherSpec

if TYPE_CHECKING:
    from kf_core import Teacher as KfTeacher

__all__ = ["detect_format", "inspect_teacher", "open_teacher", "register_teacher"]

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}  # kf_core picks the loader by suffix
_MEDIA = {"onnx": "application/onnx", "torchscript": "application/x-torchscript"}


def detect_format(path: Path) -> str:
    """``torchscript`` for zip archives, else ``onnx`` if it parses and passes the checker."""
    if zipfile.is_zipfile(path):
        return "torchscript"
    with path.open("rb") as f:
        head = f.read(2)
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise InvalidInputError(
            "the uploaded file is a Python pickle; pickles are refused unread because loading one can run any code. "
            "Export the model with torch.jit.script (or trace) and torch.jit.save, or to ONNX"
        )

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError has no stable import path
        raise InvalidInputError(
            "the uploaded file is neither an ONNX model nor a TorchScript archive (it does not parse as ONNX: "
            f"{str(e)[:200]}); upload a .onnx file or a torch.jit.save archive"
        ) from None
    if not model.graph.node and not model.graph.output:
        # Arbitrary bytes can parse as an empty protobuf message; this is not a model.
        raise InvalidInputError("the uploaded file is not an ONNX model (it holds no graph); upload a .onnx file")
    external = _external_locations(model)
    if external:
        # One uploaded file has no neighbours: any external-data path points outside the upload (../../etc/...).
        raise InvalidInputError(
            f"the ONNX model keeps weights in external files ({', '.join(sorted(external)[:3])}); external data is "
            "refused. Upload one self-contained file: onnx.save(model, path, save_as_external_data=False)"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise InvalidInputError(f"the ONNX model fails onnx.checker: {str(e)[:500]}; re-export it") from None
    return "onnx"


def _external_locations(model: Any) -> set[str]:
    """Locations of every tensor (initializers, sparse initializers, constants, subgraphs) stored outside the file."""
    found: set[str] = set()

    def tensor(t: Any) -> None:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            locations = [e.value for e in t.external_data if e.key == "location"]
            found.update(locations or ["<unnamed>"])

    def graph(g: Any) -> None:
        for t in g.initializer:
            tensor(t)
        for sp in g.sparse_initializer:
            tensor(sp.values)
            tensor(sp.indices)
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    tensor(a.t)
                for t in a.tensors:
                    tensor(t)
                if a.HasField("g"):
                    graph(a.g)
                for sub in a.graphs:
                    graph(sub)

    graph(model.graph)
    return found


def open_teacher(
    path: Path,
    *,
    format: str,
    outputs: dict[str, Any] | None,
    features: list[Any] | None,
    input_shape: list[int] | None,
    class_names: dict[str, list[str]],
) -> KfTeacher:
    """Load a teacher file with kf_core's :func:`~kf_core.load_teacher`, the same way for validation and jobs."""
    if format == "torchscript" and (input_shape is None or not outputs):
        raise InvalidInputError(
            "a TorchScript teacher needs 'input_shape' (one sample's shape: [D] for vectors, [C, H, W] for images) "
            "and 'outputs' ({name: dict key or tuple index}) in its spec: TorchScript files do not record them"
        )
    return load_teacher(
        path,
        format=format,
        outputs=outputs,
        features=features,
        input_shape=input_shape,
        class_names=class_names,
    )


def inspect_teacher(path: Path, spec: TeacherSpec) -> TeacherInfo:
    """Validate the file at ``path`` against ``spec``; raise a 4xx error if the teacher is unusable."""
    fmt = detect_format(path)
    teacher = open_teacher(
        path,
        format=fmt,
        outputs=spec.outputs,
        features=spec.features,
        input_shape=spec.input_shape,
        class_names=spec.class_names,
    )
    outputs: dict[str, str | int] = dict(getattr(teacher, "outputs", {}))
    for name, names in spec.class_names.items():
        if name not in teacher.output_sizes:
            raise InvalidInputError(f"class_names names {name!r}, which is not an output; outputs: {sorted(outputs)}")
        if len(names) != teacher.output_sizes[name]:
            raise InvalidInputError(
                f"class_names[{name!r}] has {len(names)} names but output {name!r} has {teacher.output_sizes[name]} "
                "classes"
            )
    tasks = [TaskSpec.from_json(t.model_dump()) for t in spec.tasks]
    if tasks:
        validate_tasks(tasks, teacher.output_sizes)
    return TeacherInfo(
        format=fmt,
        input_shape=[int(s) for s in teacher.input_shape],
        outputs=outputs,
        output_sizes={k: int(v) for k, v in teacher.output_sizes.items()},
        features=list(getattr(teacher, "features", [])),
        feature_dims=[int(d) for d in teacher.feature_dims],
        class_names=dict(spec.class_names),
        tasks=[t.to_json() for t in tasks],
    )


def register_teacher(*, session: Session, file: ArtifactWriter, filename: str, spec: TeacherSpec) -> Teacher:
    """Validate the received file against ``spec``, then store and register both (committed), or keep nothing."""
    if catalog.teacher_name_taken(session=session, name=spec.name):  # before the costly validation
        raise ConflictError(f"a teacher named {spec.name!r} already exists; choose another name")
    info = inspect_teacher(file.path, spec)
    stored = file.commit()
    artifact = catalog.record_artifact(session=session, stored=stored, media_type=_MEDIA[info.format])
    teacher = catalog.create_teacher(
        session=session,
        name=spec.name,
        filename=filename,
        description=spec.description,
        info=info,
        artifact=artifact,
    )
    session.commit()
    return teacher
