"""A small KITTI tree written by the tests: raw drives (images, calib, Velodyne scans) and annotated depth PNGs,
rendered from the synthetic street scene with a known camera, plus BTS- and monodepth2-format lists."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from space_clip_ros.synthetic import KITTI_K, KITTI_SIZE, render_scene

DATE = "2011_09_26"
# Velodyne -> camera: x forward, y left, z up  ->  x right, y down, z forward, plus an offset (metres).
VELO_R = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
VELO_T = np.array([0.06, -0.08, -0.27])


@dataclass
class KittiTree:
    raw: Path
    gt: Path
    size: Tuple[int, int]
    intrinsics: Tuple[float, float, float, float]
    train_list: Path
    test_list: Path
    velodyne_list: Path
    depth: Dict[str, np.ndarray] = field(default_factory=dict)  # image rel path -> dense rendered depth
    annotated: Dict[str, np.ndarray] = field(default_factory=dict)  # image rel path -> sparse gt as written


def velo_calib_text() -> str:
    row = " ".join
    return "\n".join(["calib_time: synthetic",
                      "R: " + row(f"{v:.9e}" for v in VELO_R.ravel()),
                      "T: " + row(f"{v:.9e}" for v in VELO_T), ""])


def camera_to_velodyne(points_cam: np.ndarray) -> np.ndarray:
    return (points_cam - VELO_T) @ VELO_R  # inverse of p_cam = R p_velo + T (R orthonormal)


def write_tree(root: Path, drives: Dict[int, int], test_drive: int, size=(96, 288), step_m: float = 1.5,
               density: float = 0.3, seed: int = 0) -> KittiTree:
    """``drives``: {drive number: frames}. Frames of ``test_drive`` go to the test lists and gt ``val/``, the rest
    to the training list and gt ``train/``."""
    import cv2

    height, width = size
    scale = width / 1242.0
    k = (KITTI_K[0] * scale, KITTI_K[1] * scale, KITTI_K[2] * scale, KITTI_K[3] * (height / KITTI_SIZE[0]))
    raw, gt = root / "raw", root / "gt"
    (raw / DATE).mkdir(parents=True, exist_ok=True)
    (raw / DATE / "calib_cam_to_cam.txt").write_text(kitti_calib_text(size, k))
    (raw / DATE / "calib_velo_to_cam.txt").write_text(velo_calib_text())
    rng = np.random.default_rng(seed)
    tree = KittiTree(raw, gt, size, k, root / "train.txt", root / "test.txt", root / "test_velodyne.txt")
    train_lines: List[str] = []
    test_lines: List[str] = []
    velo_lines: List[str] = []
    for drive, frames in drives.items():
        name = f"{DATE}_drive_{drive:04d}_sync"
        split = "val" if drive == test_drive else "train"
        for i in range(frames):
            rgb, depth = render_scene(size=size, intrinsics=k, forward=(drive * 10 + i) * step_m)
            image_rel = f"{DATE}/{name}/image_02/data/{i:010d}.png"
            depth_rel = f"{name}/proj_depth/groundtruth/image_02/{i:010d}.png"
            (raw / image_rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(raw / image_rel), rgb[..., ::-1])
            # Annotated depth: a random sparse subset, like the accumulated LiDAR maps.
            sparse = np.where((rng.random(size) < density) & (depth > 0), depth, 0).astype(np.float32)
            sparse = np.round(sparse * 256.0) / 256.0
            (gt / split / depth_rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(gt / split / depth_rel), (sparse * 256.0).astype(np.uint16))
            tree.depth[image_rel], tree.annotated[image_rel] = depth, sparse
            # A Velodyne scan: every 3rd row of the rendered geometry, moved into the scanner's frame.
            v, u = np.nonzero(depth > 0)
            keep = v % 3 == 0
            u, v, z = u[keep], v[keep], depth[v[keep], u[keep]].astype(np.float64)
            cam = np.stack([(u - k[2]) * z / k[0], (v - k[3]) * z / k[1], z], axis=1)
            velo = camera_to_velodyne(cam)
            scan = np.concatenate([velo, np.full((len(velo), 1), 0.5)], axis=1).astype(np.float32)
            (raw / DATE / name / "velodyne_points" / "data").mkdir(parents=True, exist_ok=True)
            scan.tofile(str(raw / DATE / name / "velodyne_points" / "data" / f"{i:010d}.bin"))
            line = f"{image_rel} {depth_rel} {k[0]:.4f}"
            (test_lines if drive == test_drive else train_lines).append(line)
            if drive == test_drive:
                velo_lines.append(f"{DATE}/{name} {i:010d} l")
    tree.train_list.write_text("\n".join(train_lines) + "\n")
    tree.test_list.write_text("\n".join(test_lines) + "\n")
    tree.velodyne_list.write_text("\n".join(velo_lines) + "\n")
    return tree


def kitti_calib_text(size: Tuple[int, int] = KITTI_SIZE, intrinsics: Sequence[float] = KITTI_K) -> str:
    """A calib_cam_to_cam.txt for camera 02 in KITTI's layout (rectified, no distortion)."""
    fx, fy, cx, cy = intrinsics
    height, width = size

    def row(values):
        return " ".join(f"{v:.6e}" for v in values)

    p = [fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0]
    return "\n".join([
        "calib_time: synthetic",
        f"S_02: {row([width, height])}",
        f"K_02: {row([fx, 0, cx, 0, fy, cy, 0, 0, 1])}",
        f"D_02: {row([0, 0, 0, 0, 0])}",
        f"R_02: {row([1, 0, 0, 0, 1, 0, 0, 0, 1])}",
        f"S_rect_02: {row([width, height])}",
        f"R_rect_00: {row([1, 0, 0, 0, 1, 0, 0, 0, 1])}",
        f"R_rect_02: {row([1, 0, 0, 0, 1, 0, 0, 0, 1])}",
        f"P_rect_02: {row(p)}",
        "",
    ])


def write_kitti_drive(root, date: str = "2011_09_26", drive: int = 1, frames: int = 3, step_m: float = 2.0,
                      size: Tuple[int, int] = KITTI_SIZE) -> "list":
    """Write synthetic frames as a KITTI raw drive: ``root/date/calib_cam_to_cam.txt`` and
    ``root/date/date_drive_NNNN_sync/image_02/data/%010d.png``. Returns the image paths."""
    from pathlib import Path

    import cv2

    date_dir = Path(root) / date
    image_dir = date_dir / f"{date}_drive_{drive:04d}_sync" / "image_02" / "data"
    image_dir.mkdir(parents=True, exist_ok=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(kitti_calib_text(size))
    paths = []
    for i in range(frames):
        rgb, _ = render_scene(size=size, forward=i * step_m)
        path = image_dir / f"{i:010d}.png"
        cv2.imwrite(str(path), rgb[..., ::-1])
        paths.append(path)
    return paths
