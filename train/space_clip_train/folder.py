"""A training set in a folder, as space-clip-bag2dataset writes it from a robot's recording (or anyone by hand):

  DIR/images/000000.png        the camera's frames (any size, all the camera's)
  DIR/depth/000000.png         their depth: uint16 PNG, metres x 256, 0 = no measurement (KITTI's format), same size
  DIR/train.txt, DIR/val.txt   lines ``image depth fx`` relative to DIR
  DIR/camera.yaml              camera_calibration YAML: image_width, image_height, camera_matrix, projection_matrix

Training size rule (:func:`training_size`): the random training crop and the model's output size are 94% of the
camera's height and width (KITTI's 352 of 375 rows), each rounded down to a multiple of 16: the crop keeps the
camera's own aspect ratio, so the frozen tower sees training crops and whole evaluation frames squeezed alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import yaml

from space_clip_ros.model.config import TrainingCamera

from . import data
from .data import DepthDataset, PathLike, read_rgb


def read_camera(folder: PathLike) -> Tuple[TrainingCamera, Tuple[int, int]]:
    """(the camera the set was recorded with: fx and width, as the node's focal transfer wants it; (H, W)) from
    DIR/camera.yaml. fx is K's, as bag2dataset projected with."""
    path = Path(folder) / "camera.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a training folder needs its camera.yaml (written by "
                                "space-clip-bag2dataset; camera_calibration's format)")
    info = yaml.safe_load(path.read_text()) or {}
    try:
        width, height = int(info["image_width"]), int(info["image_height"])
        fx = float(info["camera_matrix"]["data"][0])
    except (KeyError, TypeError, ValueError) as error:
        raise FileNotFoundError(f"{path} is not a camera_calibration YAML (image_width, image_height, "
                                f"camera_matrix.data): {error}") from None
    return TrainingCamera(fx=fx, width=width), (height, width)


def training_size(height: int, width: int) -> Tuple[int, int]:
    """The training crop and output size for a camera of ``height`` x ``width`` (see the module's docstring)."""
    h, w = int(0.94 * height) // 16 * 16, int(0.94 * width) // 16 * 16
    if min(h, w) < 32:
        raise ValueError(f"a {width}x{height} camera is too small to train on (at least 35 px a side)")
    return h, w


class FolderDepth(DepthDataset):
    """The lines of DIR/train.txt or DIR/val.txt; images and depth under DIR. ``eval_size`` is set per folder."""

    name = "folder"
    data_root_help = "the training folder (images/, depth/, train.txt, val.txt, camera.yaml)"

    def load(self, index: int):
        sample = self.samples[index]
        image = self.data_root / sample.image.lstrip("/")
        rgb = read_rgb(image)
        depth = None
        if sample.depth is not None:
            depth_path = (self.gt_root or self.data_root) / sample.depth.lstrip("/")
            depth = data.read_depth_png(depth_path, 256.0, "depth")
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"{depth_path.name} is {depth.shape[1]}x{depth.shape[0]} but its image is "
                                 f"{rgb.shape[1]}x{rgb.shape[0]}")
        return rgb, depth


def dataset_for(folder: PathLike):
    """A FolderDepth class whose evaluation size is ``folder``'s training size, and the folder's camera."""
    camera, (height, width) = read_camera(folder)
    size = training_size(height, width)
    return type("FolderDepth", (FolderDepth,), {"eval_size": size}), camera


__all__ = ["FolderDepth", "dataset_for", "read_camera", "training_size"]
