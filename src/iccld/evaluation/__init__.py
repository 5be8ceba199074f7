"""Evaluation: confusion matrix -> IoU, whole/sliding-window inference, folder scoring, tables."""

from .inference import slide_inference, whole_inference
from .metrics import SYNTHIA_SUBSETS, ConfusionMatrix
from .report import format_table, markdown_table
from .score import score_folders

__all__ = [
    "SYNTHIA_SUBSETS", "ConfusionMatrix", "format_table", "markdown_table", "score_folders",
    "slide_inference", "whole_inference",
]
