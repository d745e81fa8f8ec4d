"""space_clip_ros: metric depth from one camera with SPACE-CLIP, as a library and a ROS 2 node.

    from space_clip_ros import load_checkpoint, DepthEstimator
    model = load_checkpoint("space_clip_kitti.pt", device="cpu")     # eval mode
    depth = model(pixel_values, output_size=(352, 704))              # (B, 1, H, W) metres
    depth_hw = DepthEstimator(model)(rgb_uint8)                       # float32 HxW metres
"""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .estimator import DepthEstimator
from .model import (
    BackboneUnavailableError,
    SpaceClip,
    SpaceClipConfig,
    SpaceClipDecoder,
)
from .version import __version__

__all__ = [
    "BackboneUnavailableError",
    "CheckpointError",
    "DepthEstimator",
    "SpaceClip",
    "SpaceClipConfig",
    "SpaceClipDecoder",
    "__version__",
    "load_checkpoint",
    "save_checkpoint",
]
