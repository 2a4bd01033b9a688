"""Registry of network architectures (backbones), in the manner of timm's ``_registry``.

Each architecture is a factory function decorated with :func:`register_net`; :func:`create_net` builds one by
name. Every registered net follows the :class:`kf_core.nets.base.Backbone` contract (``in_channels``,
``feature_dim``, ``stage_dims``, ``forward_stages``), so the training code can use any of them as a teacher
backbone, a CKN or a TSN.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from kf_core.errors import UnknownArchitectureError

if TYPE_CHECKING:
    from kf_core.nets.base import Backbone

__all__ = ["create_net", "list_nets", "register_net"]

_F = TypeVar("_F", bound=Callable[..., "Backbone"])
_NETS: dict[str, Callable[..., Backbone]] = {}


def register_net(fn: _F) -> _F:
    """Register ``fn`` under its function name; re-registering a name warns and replaces it."""
    name = fn.__name__
    if name in _NETS:
        warnings.warn(f"network {name!r} registered twice; the later definition wins", stacklevel=2)
    _NETS[name] = fn
    return fn


def _ensure_loaded() -> None:
    # Importing the package runs every @register_net in kf_core.nets.
    import kf_core.nets  # noqa: F401


def list_nets(pattern: str = "*") -> list[str]:
    """Names of the registered architectures matching the fnmatch ``pattern``, sorted."""
    _ensure_loaded()
    return sorted(n for n in _NETS if fnmatch.fnmatch(n, pattern))


def create_net(name: str, **kwargs: Any) -> Backbone:
    """Build the architecture registered as ``name`` with keyword arguments ``kwargs``."""
    _ensure_loaded()
    try:
        factory = _NETS[name]
    except KeyError:
        raise UnknownArchitectureError("architecture", name, list(_NETS)) from None
    return factory(**kwargs)
