"""Datasets, label maps, transforms, the synthetic benchmark and ``iccld prepare``."""
