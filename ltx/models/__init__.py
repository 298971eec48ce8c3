"""Explained models (frozen black boxes) and explainers."""

from ltx.models.explained import ExplainedModel, model_family

__all__ = ["ExplainedModel", "model_family"]
