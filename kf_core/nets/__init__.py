"""Registered network architectures. Importing this package registers all of them."""

from kf_core.nets import mlp, mobilenet, resnet, simpleconv, wrn  # noqa: F401
from kf_core.nets.base import Backbone, GaussianEncoder

__all__ = ["Backbone", "GaussianEncoder"]
