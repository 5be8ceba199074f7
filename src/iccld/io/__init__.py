"""The edge between files (and configs) and networks: nothing in :mod:`iccld.models` opens a file.

- :mod:`~iccld.io.build`: ``ModelConfig`` -> network (:func:`build_model_from_config`);
- :mod:`~iccld.io.pretrained`: a network as a folder (:func:`save_pretrained`, :func:`load_pretrained`);
- :mod:`~iccld.io.backbone_weights`: ImageNet weights into a backbone, with a load report;
- :mod:`~iccld.io.checkpoint`: training checkpoints (``last.ckpt``) and finding a checkpoint from
  whatever path a user gives.
"""

from .backbone_weights import LoadReport, load_backbone_weights
from .build import build_model_from_config, check_model_config
from .checkpoint import load_checkpoint, read_training_info, resolve_checkpoint, save_checkpoint
from .pretrained import load_pretrained, read_model_config, save_pretrained

__all__ = [
    "LoadReport", "build_model_from_config", "check_model_config", "load_backbone_weights", "load_checkpoint",
    "load_pretrained", "read_model_config", "read_training_info", "resolve_checkpoint", "save_checkpoint",
    "save_pretrained",
]
