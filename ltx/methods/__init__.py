"""Saliency methods: LTX (`ltx.methods.ltx`) and the baselines it is compared with, one registry."""

from ltx.methods import attention, gradcam, gradients, ltx, oracle, random, rise  # noqa: F401  (registers)
from ltx.methods.base import METHODS, Method, MethodNotApplicable, create_method, register_method

__all__ = ["METHODS", "Method", "MethodNotApplicable", "create_method", "register_method"]
