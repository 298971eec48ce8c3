"""Saliency methods: LTX's own and the baselines it is compared with, one registry."""

from ltx.methods.base import METHODS, Method, MethodNotApplicable, create_method, register_method
from ltx.methods import attention, gradcam, gradients, oracle, random, rise  # noqa: F401  (registers)

__all__ = ["METHODS", "Method", "MethodNotApplicable", "create_method", "register_method"]
