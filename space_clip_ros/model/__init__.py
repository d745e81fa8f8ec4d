"""The SPACE-CLIP model: configuration, frozen backbone, decoder."""

from .backbone import BackboneUnavailableError, FrozenBackbone, load_pretrained_tower, tower_from_config
from .config import (
    ABLATION_VARIANTS,
    CLIP_MEAN,
    CLIP_STD,
    DEFAULT_BACKBONE,
    KITTI_CAMERA,
    NYU_CAMERA,
    Preprocessing,
    SpaceClipConfig,
    TrainingCamera,
)
from .decoder import SpaceClipDecoder, tokens_to_map
from .space_clip import SpaceClip

__all__ = [
    "ABLATION_VARIANTS",
    "BackboneUnavailableError",
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_BACKBONE",
    "FrozenBackbone",
    "KITTI_CAMERA",
    "NYU_CAMERA",
    "Preprocessing",
    "SpaceClip",
    "SpaceClipConfig",
    "SpaceClipDecoder",
    "load_pretrained_tower",
    "TrainingCamera",
    "tokens_to_map",
    "tower_from_config",
]
