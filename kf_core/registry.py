"""Registry of network architectures (backbones), in the manner of timm's ``_registry``.

Each architecture is a factory function decorated with :func:`register_net`; :func:`kf_core.nets.create_net`
builds one by name. The registry itself imports no network: :mod:`kf_core.nets` imports every architecture
module (each registers itself here) and then offers ``create_net`` and ``list_nets``, so the dependency runs one
way, nets -> registry. Every registered net follows the :class:`kf_core.nets.base.Backbone` contract (``in_channels``,
``feature_dim``, ``stage_dims``, ``forward_stages``), so the training code can use any of them as a teacher
backbone, a CKN or a TSN.
"""

from __future__ import annotations

import fnmatch
import inspect
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from kf_core.errors import UnknownArchitectureError

if TYPE_CHECKING:
    from kf_core.nets.base import Backbone

__all__ = ["accepts", "build_registered", "register_net", "registered_names"]

_F = TypeVar("_F", bound=Callable[..., "Backbone"])
_NETS: dict[str, Callable[..., Backbone]] = {}


def register_net(fn: _F) -> _F:
    """Register ``fn`` under its function name; re-registering a name warns and replaces it."""
    name = fn.__name__
    if name in _NETS:
        warnings.warn(f"network {name!r} registered twice; the later definition wins", stacklevel=2)
    _NETS[name] = fn
    return fn


def registered_names(pattern: str = "*") -> list[str]:
    """Names registered so far that match the fnmatch ``pattern``, sorted (use :func:`kf_core.nets.list_nets`)."""
    return sorted(n for n in _NETS if fnmatch.fnmatch(n, pattern))


def build_registered(name: str, **kwargs: Any) -> Backbone:
    """Build the architecture registered as ``name`` (use :func:`kf_core.nets.create_net`, which loads them all)."""
    try:
        factory = _NETS[name]
    except KeyError:
        raise UnknownArchitectureError("architecture", name, list(_NETS)) from None
    return factory(**kwargs)


def accepts(name: str, parameter: str) -> bool:
    """Whether the architecture registered as ``name`` takes the keyword ``parameter``."""
    try:
        factory = _NETS[name]
    except KeyError:
        raise UnknownArchitectureError("architecture", name, list(_NETS)) from None
    return parameter in inspect.signature(factory).parameters
