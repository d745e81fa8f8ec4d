"""Temporal fusion of one camera's depth and a per-pixel confidence, without ROS, on the model's device.

Each frame, the previous fused depth is carried into the current image by the camera's motion (from tf: the
camera's pose in a fixed frame such as ``odom`` at both stamps): back-projected, moved, projected with the current
intrinsics and z-buffered (the nearest point wins a pixel), one-pixel gaps filled from their neighbours. Where the
carried depth agrees with the new one (their inverse depths differ by less than ``gate`` of the new inverse depth)
the two are averaged in inverse depth, weighted by how many frames the carried value already holds (at most
``max_frames``); elsewhere (something moved, a surface came into view) the new depth starts over with weight 1.

Confidence (0..1) = the temporal term (weight / max_frames: how many agreeing frames back the pixel) x the
flying-pixel term (0 at a depth edge, :func:`space_clip_ros.planner_outputs.edge_mask`). Without fusion the temporal
term is 1. Pixels without depth have confidence 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .planner_outputs import edge_mask

Intrinsics = Tuple[float, float, float, float]  # fx, fy, cx, cy


#: The z-buffer keys: the float32 bits of the depth (ordered as integers for positive floats) above 8 bits of weight,
#: so one integer minimum finds the nearest point of each pixel and its weight together, without rounding the depth.
_WEIGHT_BITS = 8
MAX_FRAMES_LIMIT = 2 ** _WEIGHT_BITS - 1


def _rays(shape: Tuple[int, int], intrinsics: Intrinsics, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(3, H*W) viewing rays ((u - cx) / fx, (v - cy) / fy, 1) of every pixel."""
    fx, fy, cx, cy = intrinsics
    height, width = shape
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([((u - cx) / fx).reshape(-1), ((v - cy) / fy).reshape(-1),
                        torch.ones(height * width, device=device, dtype=dtype)])


def warp_depth(depth: Tensor, weight: Tensor, intrinsics: Intrinsics, motion: Tensor,
               target_intrinsics: Intrinsics, size: Tuple[int, int], rays: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor]:
    """``depth`` (H, W; 0 or NaN = none) and its ``weight`` (whole numbers up to :data:`MAX_FRAMES_LIMIT`) seen from
    a camera moved by ``motion`` (4x4, current <- previous optical frame): (depth, weight) at ``size`` with
    ``target_intrinsics``, 0 where nothing lands. A z-buffer keeps the nearest point of each pixel (and its weight);
    ``rays``: :func:`_rays` of ``depth``'s pixels when the caller keeps them."""
    z = torch.nan_to_num(depth.reshape(-1), nan=0.0, posinf=0.0)
    if rays is None:
        rays = _rays(tuple(depth.shape), intrinsics, depth.device, z.dtype)
    motion = motion.to(device=depth.device, dtype=z.dtype)
    direction = motion[:3, :3] @ rays  # moved point = z * (R ray) + t
    moved = direction * z + motion[:3, 3:4]
    tfx, tfy, tcx, tcy = target_intrinsics
    height, width = size
    mz = moved[2]
    safe = mz.clamp(min=1e-6)
    u = torch.round(tfx * moved[0] / safe + tcx)
    v = torch.round(tfy * moved[1] / safe + tcy)
    land = (z > 0) & (mz > 1e-6) & (u >= 0) & (v >= 0) & (u < width) & (v < height)
    empty = height * width  # the pixels that land nowhere go to one spare bin
    pixel = torch.where(land, v * width + u, torch.full_like(u, empty)).long()
    bits = mz.clamp(min=0).to(torch.float32).view(torch.int32).long()
    key = (bits << _WEIGHT_BITS) | weight.reshape(-1).long()
    nearest = torch.full((empty + 1,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=depth.device)
    nearest.scatter_reduce_(0, pixel, key, "amin")
    nearest = nearest[:empty]
    hit = nearest != torch.iinfo(torch.int64).max
    nearest_z = (nearest >> _WEIGHT_BITS).to(torch.int32).view(torch.float32).to(z.dtype)
    out_depth = torch.where(hit, nearest_z, torch.zeros((), dtype=z.dtype, device=z.device))
    out_weight = torch.where(hit, (nearest & MAX_FRAMES_LIMIT).to(weight.dtype), torch.zeros((), dtype=weight.dtype,
                                                                                                device=z.device))
    return _fill_holes(out_depth.reshape(height, width), out_weight.reshape(height, width))


def _box_sum(planes: Tensor) -> Tensor:
    """Sums over each pixel's 3x3 neighbourhood (zeros outside the image) of (C, H, W) planes: two passes of
    shifted adds (a third of the time of avg_pool2d on a CPU)."""
    rows = planes.clone()
    rows[:, 1:] += planes[:, :-1]
    rows[:, :-1] += planes[:, 1:]
    out = rows.clone()
    out[:, :, 1:] += rows[:, :, :-1]
    out[:, :, :-1] += rows[:, :, 1:]
    return out


def _fill_holes(depth: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor]:
    """One-pixel gaps of a forward warp (a surface coming nearer spreads its points apart): filled with the mean
    inverse depth (and weight) of their valid 3x3 neighbours, which is exact on a plane and unbiased on a slope; a
    gap at a depth edge gets a mixed value, which the consistency gate then refuses."""
    hole = depth <= 0
    valid = (~hole).to(depth.dtype)
    inverse = torch.where(hole, torch.zeros_like(depth), 1.0 / depth.clamp(min=1e-9))
    sums = _box_sum(torch.stack([valid, inverse, weight.to(depth.dtype) * valid]))
    count = sums[0].clamp(min=1e-9)
    fill = hole & (sums[0] > 0)
    depth = torch.where(fill, 1.0 / (sums[1] / count).clamp(min=1e-9), depth)
    weight = torch.where(fill, torch.floor(sums[2] / count).to(weight.dtype), weight)
    return depth, weight


@dataclass
class _History:
    """What the host knows of the fused depth held on the device: its camera model and pose and its stamp."""

    shape: Tuple[int, int]
    intrinsics: Intrinsics
    pose: np.ndarray  # 4x4 fixed <- optical frame at its stamp
    stamp_ns: int
    dtype: torch.dtype


class TemporalFusion:
    """One camera's fused depth over time. ``gate``: the largest relative inverse-depth difference that still
    counts as agreement; ``max_frames``: the most frames one pixel averages.

    The fused depth and its weights live on the device in buffers of their own, updated in place, so a frame's
    device work (:meth:`fuse_static`) reads and writes the same memory every frame (a CUDA graph can replay it);
    what the host keeps (:meth:`remember`: pose, stamp, camera model) decides whether the next frame carries the
    history (:meth:`motion_to`)."""

    def __init__(self, *, gate: float, max_frames: int) -> None:
        self.configure(gate, max_frames)
        self._history: Optional[_History] = None
        #: (size, device, dtype) -> (fused metres, 0 = none; weights): one pair per size, so a program captured
        #: for one size always reads and writes the same memory
        self._held: Dict[Tuple, Tuple[Tensor, Tensor]] = {}
        self._rays: Tuple[Any, Optional[Tensor]] = (None, None)  # (key, rays) of the history's camera model

    def configure(self, gate: float, max_frames: int) -> None:
        """New parameter values; the carried depth stays."""
        self.gate, self.max_frames = float(gate), int(max_frames)

    def motion_to(self, pose: Optional[np.ndarray], stamp_ns: int, device: Any) -> Optional[Tensor]:
        """The camera's motion since the fused history (4x4, current <- previous optical frame) on ``device``, or
        None when the history cannot be carried (no pose, no history yet, time went back). The node uploads it
        before the frame's path, so :meth:`fuse_static` itself takes nothing from the host."""
        history = self._history
        if pose is None or history is None or stamp_ns <= history.stamp_ns:
            return None
        return torch.from_numpy(np.linalg.inv(pose) @ history.pose).to(device=device, dtype=history.dtype)

    def carried_from(self) -> Optional[Tuple]:
        """The held depth's size and camera model (what a frame carrying it depends on), None without history."""
        history = self._history
        return None if history is None else (history.shape, history.intrinsics, history.dtype)

    def fuse(self, depth: Tensor, intrinsics: Intrinsics, pose: Optional[np.ndarray], stamp_ns: int) -> Tensor:
        """Fuse ``depth`` (H, W metres; NaN, 0 or inf = none; changed in place) with the carried previous depth;
        ``pose`` (4x4 fixed <- camera at ``stamp_ns``, None when tf has none: the history starts over). Returns the
        temporal term of the confidence (H, W, 0..1). :meth:`fuse_static` and :meth:`remember` together."""
        term = self.fuse_static(depth, intrinsics, self.motion_to(pose, stamp_ns, depth.device))
        self.remember(tuple(depth.shape), intrinsics, pose, stamp_ns, depth.dtype)
        return term

    def fuse_static(self, depth: Tensor, intrinsics: Intrinsics, motion: Optional[Tensor]) -> Tensor:
        """The device's part of :meth:`fuse`: ``motion`` (:meth:`motion_to`, None: start over) carries the held
        depth into this frame; the fused depth is written back into the held buffers in place."""
        valid = torch.isfinite(depth) & (depth > 0)
        weight = torch.ones_like(depth)
        history = self._history
        if motion is not None and history is not None:
            held_depth, held_weight = self._held[(history.shape, depth.device, history.dtype)]
            key = (history.shape, history.intrinsics, depth.device, history.dtype)
            if self._rays[0] != key:
                self._rays = (key, _rays(*key))
            carried, carried_weight = warp_depth(held_depth, held_weight, history.intrinsics, motion,
                                                 intrinsics, tuple(depth.shape), self._rays[1])
            inverse = torch.where(valid, 1.0 / depth, torch.zeros_like(depth))
            carried_inverse = torch.where(carried > 0, 1.0 / carried, torch.zeros_like(carried))
            agree = valid & (carried > 0) & ((inverse - carried_inverse).abs() < self.gate * inverse)
            held = carried_weight.clamp(max=self.max_frames - 1)
            fused_inverse = (held * carried_inverse + inverse) / (held + 1)
            depth.copy_(torch.where(agree, 1.0 / fused_inverse, depth))
            weight = torch.where(agree, held + 1, weight)
        slot = (tuple(depth.shape), depth.device, depth.dtype)
        if slot not in self._held:
            self._held[slot] = (torch.zeros_like(depth), torch.zeros_like(depth))
        held_depth, held_weight = self._held[slot]
        none = torch.zeros((), dtype=depth.dtype, device=depth.device)
        torch.where(valid, depth, none, out=held_depth)  # written in place, no copy
        torch.where(valid, weight, none, out=held_weight)
        return torch.where(valid, weight / self.max_frames, torch.zeros_like(weight))

    def remember(self, shape: Tuple[int, int], intrinsics: Intrinsics, pose: Optional[np.ndarray],
                 stamp_ns: int, dtype: torch.dtype = torch.float32) -> None:
        """The host's part of :meth:`fuse`, after the frame's device work: the held depth is this frame's (its
        size, camera model and ``dtype``), at ``pose`` (None: no pose, the next frame starts over)."""
        self._history = _History(tuple(shape), intrinsics, pose, stamp_ns, dtype) if pose is not None else None


def confidence(depth: Tensor, temporal: Optional[Tensor], edge_threshold: float) -> Tensor:
    """(H, W) float32 0..1: ``temporal`` (or 1) where ``depth`` is finite and positive and not a flying pixel
    (:func:`~space_clip_ros.planner_outputs.edge_mask` with ``edge_threshold``), else 0."""
    valid = torch.isfinite(depth) & (depth > 0)
    if edge_threshold > 0:
        valid &= ~edge_mask(depth.float(), edge_threshold)
    term = temporal.float() if temporal is not None else torch.ones_like(depth, dtype=torch.float32)
    return torch.where(valid, term, torch.zeros_like(term))
