"""numpy twins of the package's torch code, kept as test oracles (the package itself has one implementation of
each): organized back-projection, PCL's packed colour, PointCloud2 row bytes and a cloud message from numpy points
(as depth_image_proc's point_cloud_xyz(rgb) lays them out), and a colour map of depth."""

from typing import Optional, Tuple

import numpy as np


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


def points_to_cloud(points: np.ndarray, header, rgb: Optional[np.ndarray] = None):
    """Organized PointCloud2 like depth_image_proc's point_cloud_xyz(rgb): NaN for invalid, is_dense false."""
    from space_clip_ros.ros.messages import cloud_message  # needs the ROS messages; the rest of this file does not

    data, step = organized_cloud_bytes(points, rgb)
    buffer = np.frombuffer(data, dtype=np.float32).reshape(points.shape[0], points.shape[1], step // 4)
    return cloud_message(buffer, header)


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float, colormap: str = "turbo",
                   invalid_rgb=(0, 0, 0)) -> np.ndarray:
    """HxW metres -> HxWx3 uint8 RGB. Near is the colormap's high end (warm for turbo); NaN, inf and values <= 0
    are ``invalid_rgb``. Values are clipped to [min_depth, max_depth]."""
    from space_clip_ros.colormaps import colormap_table

    table = colormap_table(colormap)
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    scaled = (max_depth - np.clip(np.where(valid, depth, max_depth), min_depth, max_depth)) / (max_depth - min_depth)
    index = (scaled * 255.0 + 0.5).astype(np.uint8)
    rgb = table[index]
    rgb[~valid] = invalid_rgb
    return rgb
