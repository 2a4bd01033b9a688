"""Registered network architectures. Importing this package registers all of them, so build them from here."""

from __future__ import annotations

from typing import Any

from kf_core.nets import mlp, mobilenet, resnet, simpleconv, wrn  # noqa: F401  (each module registers its nets)
from kf_core.nets.base import Backbone, GaussianEncoder
from kf_core.registry import build_registered, registered_names

__all__ = ["Backbone", "GaussianEncoder", "create_net", "list_nets"]


def list_nets(pattern: str = "*") -> list[str]:
    """Names of the registered architectures matching the fnmatch ``pattern``, sorted."""
    return registered_names(pattern)


def create_net(name: str, **kwargs: Any) -> Backbone:
    """Build the architecture registered as ``name`` with keyword arguments ``kwargs``."""
    return build_registered(name, **kwargs)
