"""Parametric baselines: the same encoder with a linear head, and parametric unlearning methods."""

from .parametric import ParametricForImageClassification


__all__ = ["ParametricForImageClassification"]
