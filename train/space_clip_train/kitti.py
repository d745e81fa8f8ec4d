"""KITTI on disk: calibration, Velodyne ground truth, the annotated depth maps, evaluation crops and the dataset.

Layouts (docs/training.md, "KITTI and NYU Depth v2"):
  raw data   DATA/2011_09_26/{calib_cam_to_cam.txt, calib_velo_to_cam.txt}
             DATA/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
             DATA/2011_09_26/2011_09_26_drive_0002_sync/velodyne_points/data/0000000069.bin
  annotated  GT/{train,val}/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png (uint16, m*256)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from space_clip_ros.kitti_calib import read_kitti_calib
from space_clip_ros.model.config import KITTI_OUTPUT_SIZE

from . import data
from .data import SPLITS, DepthDataset, PathLike, read_rgb

EIGEN_TEST = SPLITS / "eigen_test_files_with_gt.txt"  # 697 lines, 652 with annotated depth
EIGEN_TEST_VELODYNE = SPLITS / "eigen_test_files.txt"  # the same 697 frames, monodepth2 format
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
KITTI_CROP_SIZE = KITTI_OUTPUT_SIZE  # the random training crop and the authors' evaluation size


def resolve_depth_path(gt_root: PathLike, rel: str) -> Optional[Path]:
    """Annotated depth ``rel`` under ``gt_root`` itself, or under its ``train/`` or ``val/`` folder."""
    root = Path(gt_root)
    for candidate in (root / rel, root / "train" / rel, root / "val" / rel):
        if candidate.is_file():
            return candidate
    return None



def read_depth_png(path: PathLike) -> np.ndarray:
    """Annotated KITTI depth: uint16 PNG, metres = value / 256, 0 = no measurement -> float32 metres (0 = none)."""
    return data.read_depth_png(path, 256.0, "KITTI depth")


def write_depth_png(path: PathLike, depth: np.ndarray) -> None:
    """Metres -> KITTI's uint16 PNG (value = round(m * 256), 0 = none)."""
    data.write_depth_png(path, depth, 256.0)


def read_velodyne(path: PathLike) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI ``.bin`` scan."""
    data = np.fromfile(str(path), dtype=np.float32)
    if data.size % 4:
        raise ValueError(f"{path}: {data.size} floats is not a whole number of (x, y, z, r) points")
    return data.reshape(-1, 4)


# ------------------------------------------------------------------------------------------ Velodyne ground truth
def velodyne_to_image_matrix(calib_dir: PathLike, camera: int = 2) -> Tuple[np.ndarray, Tuple[int, int]]:
    """3x4 projection from Velodyne to rectified camera ``camera`` pixels, and that image's (H, W):
    P_rect_0c @ R_rect_00 (4x4) @ [R | T] (4x4)."""
    cam = read_kitti_calib(Path(calib_dir) / "calib_cam_to_cam.txt")
    velo = read_kitti_calib(Path(calib_dir) / "calib_velo_to_cam.txt")
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :3] = velo["R"].reshape(3, 3)
    velo_to_cam[:3, 3] = velo["T"]
    rect = np.eye(4)
    rect[:3, :3] = cam["R_rect_00"].reshape(3, 3)
    p_rect = cam[f"P_rect_0{camera}"].reshape(3, 4)
    width, height = (int(v) for v in cam[f"S_rect_0{camera}"])
    return p_rect @ rect @ velo_to_cam, (height, width)


def project_velodyne(points: np.ndarray, projection: np.ndarray, size: Tuple[int, int],
                     vel_depth: bool = False) -> np.ndarray:
    """Sparse (H, W) float32 depth from Velodyne points (0 = none), monodepth2's recipe with a correct pixel index.

    Points behind the scanner (x < 0) are dropped; pixel = round(u) - 1, round(v) - 1 (KITTI's MATLAB convention);
    where several points land on one pixel the nearest wins. Depth is the camera z, or the Velodyne x with
    ``vel_depth`` (monodepth2's legacy ``--split eigen`` ground truth)."""
    height, width = size
    pts = points[points[:, 0] >= 0].astype(np.float64)
    homogeneous = np.concatenate([pts[:, :3], np.ones((len(pts), 1))], axis=1)
    uvz = homogeneous @ projection.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(uvz[:, 0] / uvz[:, 2]) - 1
        v = np.round(uvz[:, 1] / uvz[:, 2]) - 1
    depth = pts[:, 0] if vel_depth else uvz[:, 2]
    keep = np.isfinite(u) & np.isfinite(v) & (u >= 0) & (v >= 0) & (u < width) & (v < height) & (depth > 0)
    u, v, depth = u[keep].astype(np.int64), v[keep].astype(np.int64), depth[keep]
    out = np.zeros((height, width), dtype=np.float32)
    order = np.argsort(-depth, kind="stable")  # far first, so the nearest point on a pixel is written last
    out[v[order], u[order]] = depth[order]
    return out


def velodyne_depth(data_root: PathLike, image_rel: str, vel_depth: bool = False) -> np.ndarray:
    """Ground truth for one raw image (``date/drive/image_0c/data/N.png``) from its Velodyne scan."""
    rel = Path(image_rel)
    date_dir = Path(data_root) / rel.parts[0]
    drive_dir = Path(data_root) / rel.parts[0] / rel.parts[1]
    camera = int(rel.parts[2][-1])
    projection, size = velodyne_to_image_matrix(date_dir, camera)
    scan = read_velodyne(drive_dir / "velodyne_points" / "data" / (rel.stem + ".bin"))
    return project_velodyne(scan, projection, size, vel_depth=vel_depth)


# ------------------------------------------------------------------------------------------------------ crops
def crop_mask(size: Tuple[int, int], crop: str) -> Optional[np.ndarray]:
    """Boolean (H, W) evaluation mask: ``garg``, ``eigen`` or ``none`` (None)."""
    height, width = size
    if crop == "none":
        return None
    rows = {"garg": (0.40810811, 0.99189189), "eigen": (0.3324324, 0.91351351)}
    if crop not in rows:
        raise ValueError(f"crop must be garg, eigen or none, got {crop!r}")
    mask = np.zeros((height, width), dtype=bool)
    top, bottom = rows[crop]
    mask[int(top * height):int(bottom * height), int(0.03594771 * width):int(0.96405229 * width)] = True
    return mask


class KittiDepth(DepthDataset):
    """The lines of a KITTI list that have annotated depth: images under the raw root, depth under the annotated
    root (or its train/, val/ folders); evaluation input at 352x704 as the authors feed it."""

    name = "kitti"
    eval_size = KITTI_CROP_SIZE
    data_root_help = "the KITTI raw root with date folders"

    def load(self, index: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        sample = self.samples[index]
        if not np.isfinite(sample.focal):
            raise ValueError(f"malformed line (focal is not a number): {sample.line!r}")
        rgb = read_rgb(self.data_root / sample.image)
        depth = None
        if sample.depth is not None and self.gt_root is not None:
            path = resolve_depth_path(self.gt_root, sample.depth)
            if path is None:
                raise ValueError(f"no annotated depth {sample.depth} under {self.gt_root} (or its train/, val/)")
            depth = read_depth_png(path)
            if depth.shape != rgb.shape[:2]:
                raise ValueError(f"depth {depth.shape} and image {rgb.shape[:2]} differ in size")
        return rgb, depth
