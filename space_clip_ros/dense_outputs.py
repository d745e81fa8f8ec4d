"""What the node makes of a depth map, as tensors on the model's device (no ROS): range mask, organized point cloud
in PointCloud2 layout, colour map. The same code runs on CPU tensors; the numbers are those of the numpy functions
in :mod:`space_clip_ros.geometry` and :mod:`space_clip_ros.colormaps` (the tests compare them)."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .colormaps import colormap_table
from .geometry import back_project, check_focal


def mask_range(depth: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """Depth outside [min_depth, max_depth] set to NaN (in place); returns ``depth``."""
    return depth.masked_fill_((depth < min_depth) | (depth > max_depth), float("nan"))


def cloud_buffer(depth: Tensor, fx: float, fy: float, cx: float, cy: float, stride: int = 1,
                 rgb: Optional[Tensor] = None) -> Tensor:
    """Organized back-projection of (H, W) metres, laid out as PointCloud2 rows: (h, w, 4) float32 with x, y, z at
    0, 4, 8 (point_step 16), or (h, w, 8) with the packed 0x00RRGGBB colour at 16 (point_step 32) when ``rgb``
    ((h, w, 3) uint8, already at the cloud's size) is given. Invalid depth gives NaN points.
    (test/oracles.py has the same in numpy.)"""
    check_focal(fx, fy, stride)
    z = depth[::stride, ::stride].float()
    z = torch.where(torch.isfinite(z) & (z > 0), z, torch.full_like(z, float("nan")))
    out = torch.zeros(z.shape + (8 if rgb is not None else 4,), dtype=torch.float32, device=depth.device)
    out[..., 0], out[..., 1] = back_project(z, fx, fy, cx, cy, stride)
    out[..., 2] = z
    if rgb is not None:
        if tuple(rgb.shape[:2]) != tuple(z.shape):
            raise ValueError(f"colour is {tuple(rgb.shape[:2])} but the cloud is {tuple(z.shape)}")
        c = rgb.to(torch.int32)
        out[..., 4] = ((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]).view(torch.float32)
    return out


def resize_rgb(rgb: Tensor, size: Tuple[int, int]) -> Tensor:
    """(H, W, 3) uint8 resized to ``size`` by area averaging (OpenCV's INTER_AREA for integer factors)."""
    if tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    x = rgb.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=tuple(size), mode="area")
    return x[0].permute(1, 2, 0).add_(0.5).floor_().clamp_(0, 255).to(torch.uint8)  # halves up, as OpenCV


_LUTS: Dict[Tuple[str, str], Tensor] = {}


def colormap_lut(name: str, device: torch.device) -> Tensor:
    """(256, 3) uint8 RGB table of colormap ``name`` on ``device`` (:func:`colormap_table`), cached."""
    key = (name.lower(), str(device))
    if key not in _LUTS:
        _LUTS[key] = torch.from_numpy(colormap_table(key[0]).copy()).to(device)
    return _LUTS[key]


_RGB: Dict[Tuple[Tuple[int, ...], str], Tensor] = {}


def _constant_rgb(rgb: Tuple[int, ...], device: torch.device) -> Tensor:
    """(3,) uint8 colour on ``device``, made once (no upload inside a frame's path)."""
    key = (rgb, str(device))
    if key not in _RGB:
        _RGB[key] = torch.tensor(rgb, dtype=torch.uint8, device=device)
    return _RGB[key]


def colorize(depth: Tensor, min_depth: float, max_depth: float, colormap: str = "turbo",
             invalid_rgb=(0, 0, 0)) -> Tensor:
    """(H, W) metres -> (H, W, 3) uint8 RGB: near is the colormap's high end (warm for turbo); values clipped to
    [min_depth, max_depth]; NaN, inf and values <= 0 are ``invalid_rgb``. (test/oracles.py: the same in numpy.)"""
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    lut = colormap_lut(colormap, depth.device)
    depth = depth.float()
    valid = torch.isfinite(depth) & (depth > 0)
    clipped = torch.where(valid, depth, torch.full_like(depth, max_depth)).clamp(min_depth, max_depth)
    scaled = (max_depth - clipped) / (max_depth - min_depth)
    index = (scaled * 255.0 + 0.5).to(torch.uint8)
    return torch.where(valid[..., None], lut[index.long()], _constant_rgb(tuple(invalid_rgb), depth.device))
