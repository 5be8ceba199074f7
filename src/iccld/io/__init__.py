"""The edge between files (and configs) and networks: nothing in :mod:`iccld.models` opens a file.

- :mod:`~iccld.io.build`: ``ModelConfig`` -> network (:func:`build_model_from_config`);
- :mod:`~iccld.io.pretrained`: a network as a folder (:func:`save_pretrained`, :func:`load_pretrained`);
- :mod:`~iccld.io.backbone_weights`: ImageNet weights into a backbone, with a load report;
- :mod:`~iccld.io.checkpoint`: the training checkpoint's schema (versioned, migrated on read);
- :mod:`~iccld.io.run_folder`: the run folder's files, the provenance record, and loading whatever
  a user names as a trained model (run folder, checkpoint, final/ folder, Hub id).
"""

from .backbone_weights import LoadReport, load_backbone_weights
from .build import build_model_from_config, check_model_config
from .checkpoint import TrainingState, load_checkpoint, save_checkpoint
from .pretrained import load_pretrained, read_model_config, save_pretrained
from .run_folder import ModelSource, Provenance, RunFolder, load_source, resolve_checkpoint

__all__ = [
    "LoadReport", "ModelSource", "Provenance", "RunFolder", "TrainingState", "build_model_from_config",
    "check_model_config", "load_backbone_weights", "load_checkpoint", "load_pretrained", "load_source",
    "read_model_config", "resolve_checkpoint", "save_checkpoint", "save_pretrained",
]
