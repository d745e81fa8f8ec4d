"""Pure camera geometry (no ROS): intrinsics under resizing, depth back-projection, colour packing."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def camera_intrinsics(k, p) -> Tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of a camera_info's K (9 values) and P (12): P's (rectified), K's when P is unset (fx 0)."""
    if p[0] != 0:
        return float(p[0]), float(p[5]), float(p[2]), float(p[6])
    return float(k[0]), float(k[4]), float(k[2]), float(k[5])


def scale_intrinsics(k: np.ndarray, p: np.ndarray, scale_x: float, scale_y: float) -> Tuple[np.ndarray, np.ndarray]:
    """K (3x3) and P (3x4) of an image resized by (scale_x, scale_y): rows 0 and 1 scale by x and y, as
    image_proc's resize does; an unset P (fx 0) stays all zeros. Returns new arrays."""
    k = np.array(k, dtype=np.float64).reshape(3, 3).copy()
    p = np.array(p, dtype=np.float64).reshape(3, 4).copy()
    k[0, :] *= scale_x
    k[1, :] *= scale_y
    if p[0, 0] == 0:  # keep "P unset" unset
        p[:] = 0.0
    p[0, :] *= scale_x
    p[1, :] *= scale_y
    return k, p


def check_focal(fx: float, fy: float, stride: int = 1) -> None:
    """``ValueError`` unless both focal lengths are positive (a back-projection divides by them) and the stride is
    at least 1: the checks of every back-projection, made by its callers before they stride the depth."""
    if not (fx > 0 and fy > 0):
        raise ValueError(f"back-projection needs fx > 0 and fy > 0, got fx={fx}, fy={fy}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")


def back_project(z, fx: float, fy: float, cx: float, cy: float, stride: int = 1):
    """x and y (float32 tensors like ``z``) of the pixels of ``depth[::stride, ::stride]`` given as ``z``: pixel
    (v, u) = (row * stride, col * stride), x = (u - cx) z / fx, y = (v - cy) z / fy (optical frame: x right, y down,
    z forward). The one back-projection of the package (organized and filtered clouds; both check their arguments
    with :func:`check_focal` first); NaN depth gives NaN."""
    import torch

    height, width = z.shape
    v = torch.arange(0, height * stride, stride, dtype=torch.float32, device=z.device)[:, None]
    u = torch.arange(0, width * stride, stride, dtype=torch.float32, device=z.device)[None, :]
    return (u - cx) * z / fx, (v - cy) * z / fy


def project_points(points, size: Tuple[int, int], k: np.ndarray, d: Optional[np.ndarray] = None,
                   distortion_model: str = "plumb_bob", min_depth: float = 0.1, max_depth: float = float("inf")):
    """The sparse depth image of 3D points (N, 3) in the image's optical frame, as (flat pixel indices int64,
    depths), one per pixel that a point reaches, in the points' dtype and on their device (a torch tensor; numpy is
    taken on the CPU). Through the camera_info's K: ``u = fx x / z + cx``, ``v = fy y / z + cy`` for a rectified
    image (all-zero ``d``), K and the distortion ``d`` for a raw one (OpenCV, on the CPU); depth is z. Pixel
    ``(round(u), round(v))``, pixel centres at integer coordinates (image_geometry); points behind the camera or
    outside [min_depth, max_depth] dropped; the nearest point wins a pixel. (A stereo camera's P carries a
    baseline for points in the first camera's frame; here points are in the image's own frame, where tf put them,
    so P is not used.)"""
    import torch

    points = torch.as_tensor(points).reshape(-1, 3)
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    d = np.zeros(0) if d is None else np.asarray(d, dtype=np.float64).ravel()
    keep = _in_range(points, min_depth, max_depth)
    if np.any(d):
        import cv2

        zeros = np.zeros(3)
        cpu = points[keep].cpu().numpy().astype(np.float64).reshape(-1, 1, 3)
        if distortion_model == "equidistant":
            uv, _ = cv2.fisheye.projectPoints(cpu, zeros, zeros, k, d[:4])
        else:
            uv, _ = cv2.projectPoints(cpu, zeros, zeros, k, d)
        uv = torch.from_numpy(uv.reshape(-1, 2)).to(points.device, points.dtype)
        points, keep = points[keep], torch.ones(len(uv), dtype=torch.bool, device=points.device)
        u, v = torch.round(uv[:, 0]), torch.round(uv[:, 1])
    else:
        u, v = _rectified_uv(points, keep, (k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
    pixel, keep = _landing(u, v, keep, size)
    depth = torch.where(keep, points[:, 2], torch.full_like(points[:, 2], float("inf")))
    nearest = torch.full((size[0] * size[1] + 1,), float("inf"), dtype=depth.dtype, device=depth.device)
    nearest.scatter_reduce_(0, pixel, depth, "amin")  # the nearest point of each pixel
    pixels = (nearest[:-1] != float("inf")).nonzero(as_tuple=True)[0]
    return pixels, nearest[pixels]


def _in_range(points, min_depth: float, max_depth: float):
    z = points[:, 2]
    return (z > 0) & (z >= min_depth) & (z <= max_depth)


def _rectified_uv(points, keep, intrinsics: Tuple[float, float, float, float]):
    """Rounded pixel coordinates through a rectified camera (rows not kept get those of z = 1)."""
    import torch

    fx, fy, cx, cy = intrinsics
    z = points[:, 2]
    safe = torch.where(keep, z, torch.ones_like(z))
    return torch.round(fx * points[:, 0] / safe + cx), torch.round(fy * points[:, 1] / safe + cy)


def _landing(u, v, keep, size: Tuple[int, int]):
    """(flat pixel index of each row, H*W for rows that land nowhere; which rows land in the image)."""
    import torch

    height, width = size
    keep = keep & (u >= 0) & (v >= 0) & (u < width) & (v < height)
    return torch.where(keep, v * width + u, torch.full_like(u, height * width)).long(), keep


#: The z-buffer key of a row that lands nowhere (above every packed depth and row).
_NO_KEY = 2 ** 63 - 1


def capacity_bucket(n: int, smallest: int = 1024) -> int:
    """The fixed buffer size for ``n`` points: the next power of two, at least ``smallest`` (a new bucket is a new
    program to capture; powers of two keep their number small: 14 buckets from 1k to 8M points)."""
    size = int(smallest)
    while size < n:
        size *= 2
    return size


def project_points_static(points, valid, size: Tuple[int, int], intrinsics: Tuple[float, float, float, float],
                          min_depth: float = 0.1, max_depth: float = float("inf")):
    """:func:`project_points` for a rectified image (no distortion) in static shapes: ``points`` (C, 3) in a buffer
    of fixed capacity with ``valid`` (C,) bool saying which rows are points. Returns (flat pixel index (C,) int64,
    depth (C,)) with one row per buffer row: the point's pixel and depth where it is the nearest point of its
    pixel (the first such row on a tie), depth 0 elsewhere. The same (pixel, depth) pairs as
    :func:`project_points`, in buffer order, without reading anything on the host."""
    import torch

    keep = valid & _in_range(points, min_depth, max_depth)
    u, v = _rectified_uv(points, keep, intrinsics)
    pixel, keep = _landing(u, v, keep, size)
    z = points[:, 2]
    # One minimum per pixel over (depth, row) packed in an int64: the depth's float32 bits (ordered as integers for
    # positive floats) above the row, so the nearest point wins and the first row breaks a tie.
    rows = torch.arange(points.shape[0], device=points.device)
    key = torch.where(keep, (z.float().view(torch.int32).long() << 32) | rows, torch.full_like(rows, _NO_KEY))
    nearest = torch.full((size[0] * size[1] + 1,), _NO_KEY, dtype=torch.int64, device=points.device)
    nearest.scatter_reduce_(0, pixel, key, "amin")
    winner = keep & (nearest.index_select(0, pixel) == key)
    return torch.where(winner, pixel, torch.zeros_like(pixel)), torch.where(winner, z, torch.zeros_like(z))


def project_to_depth(points: np.ndarray, size: Tuple[int, int], k: np.ndarray, d: Optional[np.ndarray] = None,
                     distortion_model: str = "plumb_bob", min_depth: float = 0.1, max_depth: float = float("inf"),
                     dtype=np.float32) -> np.ndarray:
    """:func:`project_points` as an (H, W) ``dtype`` depth image (0 = none), computed in float64 on the CPU."""
    import torch

    pixels, depths = project_points(torch.from_numpy(np.asarray(points, dtype=np.float64)), size, k, d,
                                    distortion_model, min_depth, max_depth)
    out = np.zeros(size[0] * size[1], dtype=dtype)
    out[pixels.numpy()] = depths.numpy()
    return out.reshape(size)
