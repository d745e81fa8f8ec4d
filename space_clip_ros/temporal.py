"""Temporal fusion of one camera's depth and a per-pixel confidence, without ROS, on the model's device.

Each frame, the previous fused depth is carried into the current image by the camera's motion (from tf: the
camera's pose in a fixed frame such as ``odom`` at both stamps): back-projected, moved, projected with the current
intrinsics and z-buffered (the nearest point wins a pixel), one-pixel gaps filled from their neighbours. Where the
carried depth agrees with the new one (their inverse depths differ by less than ``gate`` of the new inverse depth)
the two are averaged in inverse depth, weighted by how many frames the carried value already holds (at most
``max_frames``); elsewhere (something moved, a surface came into view) the new depth starts over with weight 1.

Confidence (0..1) = the temporal term (weight / max_frames: how many agreeing frames back the pixel) x the
flying-pixel term (0 at a depth edge, :func:`space_clip_ros.planning.edge_mask`). Without fusion the temporal
term is 1. Pixels without depth have confidence 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .planning import edge_mask

Intrinsics = Tuple[float, float, float, float]  # fx, fy, cx, cy


def warp_depth(depth: Tensor, weight: Tensor, intrinsics: Intrinsics, motion: Tensor,
               target_intrinsics: Intrinsics, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """``depth`` (H, W; 0 or NaN = none) and its ``weight`` seen from a camera moved by ``motion`` (4x4, current
    <- previous optical frame): (depth, weight) at ``size`` with ``target_intrinsics``, 0 where nothing lands. A
    z-buffer keeps the nearest point of each pixel (and its weight)."""
    fx, fy, cx, cy = intrinsics
    rows, cols = ((depth > 0) & torch.isfinite(depth)).nonzero(as_tuple=True)
    z = depth[rows, cols]
    points = torch.stack([(cols.to(z.dtype) - cx) * z / fx, (rows.to(z.dtype) - cy) * z / fy, z], dim=1)
    motion = motion.to(device=depth.device, dtype=z.dtype)
    moved = points @ motion[:3, :3].T + motion[:3, 3]
    tfx, tfy, tcx, tcy = target_intrinsics
    height, width = size
    mz = moved[:, 2]
    front = mz > 1e-6
    u = torch.round(tfx * moved[:, 0] / mz.clamp(min=1e-6) + tcx)
    v = torch.round(tfy * moved[:, 1] / mz.clamp(min=1e-6) + tcy)
    inside = (front & (u >= 0) & (v >= 0) & (u < width) & (v < height)).nonzero(as_tuple=True)[0]
    pixel = v[inside].long() * width + u[inside].long()
    mz, carried = mz[inside], weight[rows, cols][inside]
    nearest = torch.full((height * width,), float("inf"), dtype=z.dtype, device=depth.device)
    nearest.scatter_reduce_(0, pixel, mz, "amin")
    winner = (mz == nearest[pixel]).nonzero(as_tuple=True)[0]
    out_weight = torch.zeros(height * width, dtype=weight.dtype, device=depth.device)
    out_weight[pixel[winner]] = carried[winner]
    nearest[torch.isinf(nearest)] = 0.0
    return _fill_holes(nearest.reshape(height, width), out_weight.reshape(height, width))


def _fill_holes(depth: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor]:
    """One-pixel gaps of a forward warp (a surface coming nearer spreads its points apart): filled with the mean
    inverse depth (and weight) of their valid 3x3 neighbours, which is exact on a plane and unbiased on a slope; a
    gap at a depth edge gets a mixed value, which the consistency gate then refuses."""
    hole = depth <= 0
    valid = (~hole).to(depth.dtype)[None, None]
    inverse = torch.where(hole, torch.zeros_like(depth), 1.0 / depth.clamp(min=1e-9))[None, None]
    count = torch.nn.functional.avg_pool2d(valid, 3, 1, 1, count_include_pad=False)
    mean_inverse = torch.nn.functional.avg_pool2d(inverse, 3, 1, 1, count_include_pad=False) / count.clamp(min=1e-9)
    mean_weight = torch.nn.functional.avg_pool2d(weight[None, None] * valid, 3, 1, 1,
                                                 count_include_pad=False) / count.clamp(min=1e-9)
    fill = hole & (count[0, 0] > 0)
    depth = torch.where(fill, 1.0 / mean_inverse[0, 0].clamp(min=1e-9), depth)
    weight = torch.where(fill, torch.floor(mean_weight[0, 0]), weight)
    return depth, weight


@dataclass
class _Previous:
    depth: Tensor  # fused metres, 0 = none
    weight: Tensor
    intrinsics: Intrinsics
    pose: np.ndarray  # 4x4 fixed <- optical frame at its stamp
    stamp_ns: int


class TemporalFusion:
    """One camera's fused depth over time. ``gate``: the largest relative inverse-depth difference that still
    counts as agreement; ``max_frames``: the most frames one pixel averages."""

    def __init__(self, gate: float = 0.15, max_frames: int = 8) -> None:
        self.gate, self.max_frames = float(gate), int(max_frames)
        self._previous: Optional[_Previous] = None

    def reset(self) -> None:
        self._previous = None

    def fuse(self, depth: Tensor, intrinsics: Intrinsics, pose: Optional[np.ndarray], stamp_ns: int) -> Tensor:
        """Fuse ``depth`` (H, W metres; NaN, 0 or inf = none; changed in place) with the carried previous depth;
        ``pose`` (4x4 fixed <- camera at ``stamp_ns``, None when tf has none: the history starts over). Returns
        the temporal term of the confidence (H, W, 0..1)."""
        valid = torch.isfinite(depth) & (depth > 0)
        weight = torch.ones_like(depth)
        previous = self._previous
        if pose is not None and previous is not None and stamp_ns > previous.stamp_ns:
            motion = torch.from_numpy(np.linalg.inv(pose) @ previous.pose)
            carried, carried_weight = warp_depth(previous.depth, previous.weight, previous.intrinsics, motion,
                                                 intrinsics, tuple(depth.shape))
            inverse = torch.where(valid, 1.0 / depth, torch.zeros_like(depth))
            carried_inverse = torch.where(carried > 0, 1.0 / carried, torch.zeros_like(carried))
            agree = valid & (carried > 0) & ((inverse - carried_inverse).abs() < self.gate * inverse)
            held = carried_weight.clamp(max=self.max_frames - 1)
            fused_inverse = (held * carried_inverse + inverse) / (held + 1)
            depth.copy_(torch.where(agree, 1.0 / fused_inverse, depth))
            weight = torch.where(agree, held + 1, weight)
        stored = torch.where(valid, depth, torch.zeros_like(depth))
        self._previous = (_Previous(stored, torch.where(valid, weight, torch.zeros_like(weight)), intrinsics,
                                    pose, stamp_ns) if pose is not None else None)
        return torch.where(valid, weight / self.max_frames, torch.zeros_like(weight))


def confidence(depth: Tensor, temporal: Optional[Tensor], edge_threshold: float) -> Tensor:
    """(H, W) float32 0..1: ``temporal`` (or 1) where ``depth`` is finite and positive and not a flying pixel
    (:func:`~space_clip_ros.planning.edge_mask` with ``edge_threshold``), else 0."""
    valid = torch.isfinite(depth) & (depth > 0)
    if edge_threshold > 0:
        valid &= ~edge_mask(depth.float(), edge_threshold)
    term = temporal.float() if temporal is not None else torch.ones_like(depth, dtype=torch.float32)
    return torch.where(valid, term, torch.zeros_like(term))
