"""NYU Depth v2 on disk, in the layout of the authors' release (and of BTS / AdaBins):

  ROOT/sync/<scene>/rgb_00045.jpg                           training frames (24,231 lines in the train list)
  ROOT/sync/<scene>/sync_depth_00045.png                    their depth: uint16 PNG, millimetres, 0 = none
  ROOT/official_splits/test/<scene>/rgb_00045.jpg           the 654-image test set (654 list lines)
  ROOT/official_splits/test/<scene>/sync_depth_00045.png

List lines are ``image depth focal`` (BTS format), relative to ``sync/`` (training) or ``official_splits/test/``
(evaluation); the training list's leading ``/`` is ignored. Frames are 480x640, taken with fx = 518.8579 px.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from . import data
from .data import SPLITS, DepthDataset, PathLike, read_rgb

NYU_TRAIN = SPLITS / "nyudepthv2_train_files_with_gt.txt"
NYU_TEST = SPLITS / "nyudepthv2_test_files_with_gt.txt"
NYU_SIZE = (480, 640)  # (H, W) of every frame: the release trains and evaluates on the whole frame
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0
#: Eigen's evaluation crop for NYU (rows 45:471, columns 41:601 of 480x640), as BTS and AdaBins apply it.
EIGEN_CROP = (slice(45, 471), slice(41, 601))


def folder(root: PathLike, mode: str) -> Path:
    """The folder a list's paths are relative to: ``ROOT/sync`` for training and ``ROOT/official_splits/test`` for
    evaluation when ``root`` is the NYU root holding them, else ``root`` itself."""
    root = Path(root)
    sub = root / ("sync" if mode == "train" else "official_splits/test")
    return sub if sub.is_dir() else root


def read_depth_png(path: PathLike) -> np.ndarray:
    """NYU depth: uint16 PNG in millimetres (0 = no measurement) -> float32 metres."""
    return data.read_depth_png(path, 1000.0, "NYU depth in mm")


def crop_mask(size: Tuple[int, int], crop: str) -> Optional[np.ndarray]:
    """Boolean (H, W) evaluation mask: ``eigen`` (rows 45:471, columns 41:601, scaled to ``size`` when it is not
    480x640) or ``none`` (None)."""
    if crop == "none":
        return None
    if crop != "eigen":
        raise ValueError(f"NYU crop must be eigen or none, got {crop!r}")
    height, width = size
    mask = np.zeros((height, width), dtype=bool)
    if (height, width) == NYU_SIZE:
        mask[EIGEN_CROP] = True
    else:
        sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
        rows, cols = EIGEN_CROP
        mask[int(rows.start * sy):int(rows.stop * sy), int(cols.start * sx):int(cols.stop * sx)] = True
    return mask


class NyuDepth(DepthDataset):
    """The lines of an NYU list: image and depth side by side under :func:`folder` of ``data_root`` (``gt_root``,
    when given, for the depth); training crops and evaluation input at 480x640, the whole frame, as the release."""

    name = "nyu"
    eval_size = NYU_SIZE
    data_root_help = "the NYU Depth v2 root with sync/ and official_splits/test/, or the folder the list is relative to"

    def __init__(self, list_path: PathLike, data_root: PathLike, gt_root: Optional[PathLike], mode: str, *args,
                 **kwargs):
        if Path(data_root).is_dir():
            data_root = folder(data_root, mode)
        if gt_root is not None and Path(gt_root).is_dir():
            gt_root = folder(gt_root, mode)
        super().__init__(list_path, data_root, gt_root if gt_root is not None else data_root, mode, *args, **kwargs)

    def load(self, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        sample = self.samples[index]
        if not np.isfinite(sample.focal):
            raise ValueError(f"malformed line (focal is not a number): {sample.line!r}")
        rgb = read_rgb(self.data_root / sample.image.lstrip("/"))
        depth = None
        if sample.depth is not None and self.gt_root is not None:
            path = self.gt_root / sample.depth.lstrip("/")
            if not path.is_file():
                raise ValueError(f"no depth {sample.depth} under {self.gt_root}")
            depth = read_depth_png(path)
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"depth {depth.shape} and image {rgb.shape[:2]} differ in size")
        return rgb, depth
