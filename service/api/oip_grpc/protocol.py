"""``inference.proto`` as message classes, compiled when first needed (grpcio-tools' protoc, a few milliseconds).

Nothing generated is committed: the ``.proto`` is the one source, so the wire format cannot drift from it. The
messages live in a descriptor pool of their own rather than protobuf's default one, because clients of the same
protocol (``tritonclient.grpc``) register identically named ``inference.*`` messages there, and one process may
hold both (a test, or an application that serves and calls).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

__all__ = ["PROTO", "SERVICE", "Protocol", "protocol"]

PROTO = Path(__file__).with_name("inference.proto")
SERVICE = "inference.GRPCInferenceService"


@dataclass(frozen=True)
class Protocol:
    """Message classes by short name (``ModelInferRequest``), and each RPC's request and response class."""

    messages: dict[str, Any]
    methods: dict[str, tuple[Any, Any]]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.messages[name]
        except KeyError:
            raise AttributeError(name) from None


@functools.cache
def protocol() -> Protocol:
    """The protocol's messages and methods, compiled from :data:`PROTO` once per process."""
    with tempfile.TemporaryDirectory(prefix="kf-proto-") as tmp:
        out = Path(tmp) / "inference.pb"
        code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name])
        if code != 0:
            raise RuntimeError(f"protoc could not compile {PROTO.name} (exit {code})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    package = files.file[0].package
    messages: dict[str, Any] = {}

    def add(descriptor: Any, prefix: str) -> None:
        messages[prefix + descriptor.name] = message_factory.GetMessageClass(descriptor)
        for nested in descriptor.nested_types:
            add(nested, f"{prefix}{descriptor.name}.")

    for name in files.file[0].message_type:
        add(pool.FindMessageTypeByName(f"{package}.{name.name}"), "")
    service = pool.FindServiceByName(SERVICE)

    def short(descriptor: Any) -> Any:
        return messages[descriptor.full_name.removeprefix(f"{package}.")]

    methods = {m.name: (short(m.input_type), short(m.output_type)) for m in service.methods}
    return Protocol(messages, methods)
