"""Crowd annotation data: validated sparse annotations, data sets, simulated workers."""

from .annotations import AnnotationError, Annotations

__all__ = ["Annotations", "AnnotationError"]
