"""Pure camera geometry (no ROS): intrinsics under resizing, depth back-projection, colour packing."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def scale_intrinsics(k: np.ndarray, p: np.ndarray, scale_x: float, scale_y: float) -> Tuple[np.ndarray, np.ndarray]:
    """K (3x3) and P (3x4) of an image resized by (scale_x, scale_y): rows 0 and 1 scale by x and y, as
    image_proc's resize does. Returns new arrays."""
    k = np.array(k, dtype=np.float64).reshape(3, 3).copy()
    p = np.array(p, dtype=np.float64).reshape(3, 4).copy()
    k[0, :] *= scale_x
    k[1, :] *= scale_y
    p[0, :] *= scale_x
    p[1, :] *= scale_y
    return k, p


def depth_to_points(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float, stride: int = 1) -> np.ndarray:
    """Organized back-projection of a depth image (metres along the optical axis).

    Returns (ceil(H/stride), ceil(W/stride), 3) float32 x, y, z in the optical frame (x right, y down, z forward), for
    pixels (v, u) = (row * stride, col * stride): x = (u - cx) z / fx, y = (v - cy) z / fy. Invalid depth (NaN, inf,
    <= 0) gives NaN points.
    """
    if not (fx > 0 and fy > 0):
        raise ValueError(f"back-projection needs fx > 0 and fy > 0, got fx={fx}, fy={fy}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    z = np.asarray(depth, dtype=np.float32)[::stride, ::stride]
    z = np.where(np.isfinite(z) & (z > 0), z, np.float32(np.nan))
    v = np.arange(0, depth.shape[0], stride, dtype=np.float32)[:, None]
    u = np.arange(0, depth.shape[1], stride, dtype=np.float32)[None, :]
    points = np.empty(z.shape + (3,), dtype=np.float32)
    points[..., 0] = (u - np.float32(cx)) * z / np.float32(fx)
    points[..., 1] = (v - np.float32(cy)) * z / np.float32(fy)
    points[..., 2] = z
    return points


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW uint32 0x00RRGGBB, the layout of PCL's packed ``rgb`` float field."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def organized_cloud_bytes(points: np.ndarray, rgb: Optional[np.ndarray] = None) -> Tuple[bytes, int]:
    """Interleave (H, W, 3) points (and optional (H, W, 3) uint8 colour) into PointCloud2 row data.

    Layout as depth_image_proc: x, y, z float32 at 0, 4, 8 with point_step 16; with colour, ``rgb`` at 16 and
    point_step 32. Returns (data, point_step).
    """
    height, width = points.shape[:2]
    step = 32 if rgb is not None else 16
    buffer = np.zeros((height, width, step // 4), dtype=np.float32)
    buffer[..., :3] = points
    if rgb is not None:
        buffer[..., 4] = pack_rgb(rgb).view(np.float32)
    return buffer.tobytes(), step
