"""Metric scale alignment of the model's depth to a range sensor, without ROS, on the model's device.

The decoder's metric scale is the scale of the camera it was trained on; on another camera and other scenes its
depth is off by a factor. A sparse reference (lidar points or an RGB-D image projected into the camera's image,
0 = no measurement) fixes that factor frame by frame:

- **Held-out pixels**: a share (``holdout``) of the reference pixels, chosen by a hash of pixel index and stamp,
  is never used in the fit; the accuracy before and after alignment is measured on them only (live AbsRel, delta1).
- **Robust fit**: in the log domain, ``log(reference) - log(depth)`` over the remaining pixels; points farther
  than :data:`OUTLIER_MADS` scaled median absolute deviations (at least :data:`MIN_LOG_BAND`) from the median are
  outliers; the frame's scale is ``exp`` of the mean of the inliers (twice: median, then inlier mean).
- **Over time** (:class:`ScaleTracker`): the log scale is filtered with a time constant (an exponential filter in
  the stamps' time, so a recording plays back the same at any speed), held for ``hold_s`` when the reference
  stops, then dropped: the node publishes the model's own depth again and says so in its diagnostics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

#: Outliers are farther than this many robust standard deviations (1.4826 x MAD) from the median log ratio.
OUTLIER_MADS = 3.0
#: ... and at least this far in log (about 3%), so an almost perfect fit does not call good points outliers.
MIN_LOG_BAND = 0.03
#: Multiplier of a 32-bit hash: Knuth's golden-ratio constant.
_HASH = 2654435761


@dataclass
class ScaleFit:
    """One frame's alignment: the fitted scale (None when there were too few points), the scale applied (the
    filtered one), the points used and their inlier share, and the accuracy on the held-out pixels."""

    fitted: Optional[float]
    applied: float
    state: str  # aligned | holding | unaligned
    points: int = 0
    inlier_fraction: float = float("nan")
    held_out: int = 0
    abs_rel_before: float = float("nan")
    abs_rel_after: float = float("nan")
    delta1_after: float = float("nan")
    reason: str = ""  # why there was no fit

    def values(self) -> Dict[str, str]:
        """/diagnostics key/values."""
        def number(value: float, digits: int = 4) -> str:
            return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"
        out = {"scale": number(self.applied), "scale_state": self.state, "scale_points": str(self.points),
               "scale_inlier_fraction": number(self.inlier_fraction, 3), "scale_held_out": str(self.held_out),
               "abs_rel_before": number(self.abs_rel_before), "abs_rel_after": number(self.abs_rel_after),
               "delta1_after": number(self.delta1_after)}
        if self.reason:
            out["scale_reason"] = self.reason
        return out


#: The tracker's states, by the code the device keeps.
STATES = ("unaligned", "aligned", "holding")
#: What :meth:`ScaleAligner.align_static` leaves on the device for one frame, in this order (float64).
STAT_FIELDS = ("fitted_log", "applied", "state", "points", "inlier_fraction", "held_out", "abs_rel_before",
               "abs_rel_after", "delta1_after")


def sparse(reference: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
    """(flat pixel indices, depths) of the measured pixels (> 0) of a sparse (H, W) depth image. (Host code and
    tests: its size depends on the data; the node's path keeps fixed-size buffers, see :meth:`ScaleAligner.align`.)"""
    if isinstance(reference, np.ndarray):
        pixels = np.flatnonzero(reference)
        return torch.from_numpy(pixels), torch.from_numpy(reference.reshape(-1)[pixels])
    flat = reference.reshape(-1)
    pixels = (flat > 0).nonzero(as_tuple=True)[0]
    return pixels, flat[pixels]


def holdout_mask(pixels: Tensor, share: float, seed: Union[int, Tensor]) -> Tensor:
    """True for the held-out share of ``pixels`` (flat pixel indices, int64): a hash of index and ``seed`` (the
    frame's stamp, an int or a 0-d int64 tensor on their device), so the held-out pixels change from frame to frame
    and are the same for the same frame."""
    if share <= 0:
        return torch.zeros(pixels.shape, dtype=torch.bool, device=pixels.device)
    mixed = ((pixels + (seed % 1_000_003)) * _HASH) & 0xFFFFFFFF
    mixed = ((mixed ^ (mixed >> 15)) * 2246822519) & 0xFFFFFFFF  # spread neighbouring indices apart
    return mixed.to(torch.float64) < share * 2.0 ** 32


def _ordered_bits(bits: Tensor) -> Tensor:
    """float32 bits (as int32) -> int32 keys in the floats' order (negative floats' magnitude bits flipped); its own
    inverse."""
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def masked_sort(values: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """(the values where ``mask`` in ascending order, then the others, count where ``mask`` 0-d), in static shapes:
    one sort. The entries past the count are +inf (float64) or NaN (float32: sorted as order-preserving int32 keys,
    on a CPU fifteen times faster than a float sort; the masked-out ones are the largest key)."""
    count = mask.sum()
    if values.dtype == torch.float32:
        keys = torch.where(mask, _ordered_bits(values.contiguous().view(torch.int32)), torch.iinfo(torch.int32).max)
        return _ordered_bits(torch.sort(keys).values).view(torch.float32), count
    return torch.sort(torch.where(mask, values, torch.full_like(values, math.inf))).values, count


def _middle(ordered: Tensor, count: Tensor) -> Tensor:
    """The lower middle of the first ``count`` entries of ``ordered`` (as torch.median), NaN for none."""
    middle = ordered.gather(0, ((count - 1).clamp(min=0) // 2).reshape(1))[0]
    return torch.where(count > 0, middle, torch.full_like(middle, math.nan))


def masked_median(values: Tensor, mask: Tensor) -> Tensor:
    """The median of ``values`` where ``mask`` (the lower middle for an even count, as torch.median), as a 0-d
    tensor, in static shapes (:func:`masked_sort`). NaN for an empty mask."""
    return _middle(*masked_sort(values, mask))


def run_median_deviation(deviation: Tensor, positions: Tensor, start: Tensor, count: Tensor) -> Tensor:
    """The median (lower middle) of ``deviation`` = ``|x - center|`` of sorted values x over their run
    ``[start, start + count)``, without sorting again: the m = (count + 1) // 2 smallest deviations are a run of m
    neighbours (the deviation falls, then rises), and a run's largest deviation is at one of its ends, so the median
    is the smallest over the runs of m of their ends' larger deviation, exactly one of the deviations. ``positions``:
    ``arange(len(deviation))`` on its device. NaN for an empty run."""
    m = (count - 1).clamp(min=0) // 2 + 1
    last = (positions + m - 1).clamp(max=deviation.shape[0] - 1)
    widest = torch.maximum(deviation, deviation.gather(0, last))
    inside = (positions >= start) & (positions + m <= start + count)
    smallest = torch.where(inside, widest, torch.full_like(widest, math.inf)).amin()
    return torch.where(count > 0, smallest, torch.full_like(smallest, math.nan))


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """The mean of ``values`` where ``mask`` (0-d; NaN for an empty mask)."""
    count = mask.sum()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def robust_log_scale_static(log_ratio: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor]:
    """:func:`robust_log_scale` over the entries where ``valid``, on the device: (log scale 0-d, inlier mask).
    One sort: each band's inliers are a run of the sorted values, whose deviations' median
    :func:`run_median_deviation` finds there."""
    ordered, count = masked_sort(log_ratio, valid)
    positions = torch.arange(ordered.shape[0], device=ordered.device)
    start = torch.zeros_like(count)
    center = _middle(ordered, count)
    inliers = valid
    for step in range(2):
        deviation = (ordered - center).abs()  # in sorted order
        mad = run_median_deviation(deviation, positions, start, count) * 1.4826
        band = torch.clamp(mad * OUTLIER_MADS, min=MIN_LOG_BAND)
        inliers = valid & ((log_ratio - center).abs() <= band)
        if step == 0:  # the same inliers in sorted order: a run (the deviation falls, then rises)
            run = (positions < count) & (deviation <= band)
            start, count = run.to(torch.uint8).argmax(), run.sum()
        center = masked_mean(log_ratio, inliers)
    return center, inliers


def robust_log_scale(log_ratio: Tensor) -> Tuple[float, Tensor]:
    """(log scale, inlier mask) of log ratios ``log(reference / depth)``: median, MAD band, inlier mean, and once
    more around that mean."""
    center, inliers = robust_log_scale_static(log_ratio, torch.ones_like(log_ratio, dtype=torch.bool))
    return float(center), inliers


def accuracy_static(log_ratio: Tensor, mask: Tensor, log_scale: Union[float, Tensor] = 0.0) -> Tuple[Tensor, Tensor]:
    """(AbsRel, delta1) as 0-d tensors of depth x exp(``log_scale``) against the reference where ``mask``, from
    ``log_ratio`` = log(reference / depth) per pixel: the depth's ratio to the reference is exp(log_scale -
    log_ratio)."""
    shifted = log_scale - log_ratio
    abs_rel = masked_mean((torch.exp(shifted) - 1.0).abs(), mask)
    delta1 = masked_mean((shifted.abs() < math.log(1.25)).to(log_ratio.dtype), mask)
    return abs_rel, delta1


def accuracy(log_ratio: Tensor, log_scale: float = 0.0) -> Tuple[float, float]:
    """:func:`accuracy_static` over every entry, as floats."""
    abs_rel, delta1 = accuracy_static(log_ratio, torch.ones_like(log_ratio, dtype=torch.bool), log_scale)
    return float(abs_rel), float(delta1)


class ScaleTracker:
    """The scale over time: ``time_constant_s`` of the exponential filter of the log scale (0: each frame's fit
    as it is), ``hold_s`` how long the last scale stays after the reference stops. Its state lives on the device
    of the fits it is given (:meth:`update_static`), so a frame's scale is never read on the host."""

    def __init__(self, time_constant_s: float, hold_s: float) -> None:
        self.time_constant_s, self.hold_s = float(time_constant_s), float(hold_s)
        self.log_scale: Optional[Tensor] = None  # float64 0-d
        self.last_fit_ns: Optional[Tensor] = None  # int64 0-d
        self.has_scale: Optional[Tensor] = None  # bool 0-d

    def _state(self, device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
        """The state on ``device``: made once per device and only ever updated in place afterwards (a captured
        program holds these tensors; a frame on another device is another program)."""
        if self.log_scale is None or self.log_scale.device != device:
            self.log_scale = torch.zeros((), dtype=torch.float64, device=device)
            self.last_fit_ns = torch.zeros((), dtype=torch.int64, device=device)
            self.has_scale = torch.zeros((), dtype=torch.bool, device=device)
        return self.log_scale, self.last_fit_ns, self.has_scale  # type: ignore[return-value]

    def update_static(self, stamp_ns: Union[int, Tensor], fitted_log_scale: Tensor,
                      fitted: Tensor) -> Tuple[Tensor, Tensor]:
        """(the scale to apply at ``stamp_ns`` (an int, or a 0-d int64 tensor on the device), its state code in
        :data:`STATES`), both 0-d on the device, after this frame's fit: ``fitted_log_scale`` counts where
        ``fitted`` (0-d bool) is True. The state is updated in place (the same memory every frame)."""
        log_scale, last, has = self._state(fitted.device)
        stamp = stamp_ns.to(last.dtype) if isinstance(stamp_ns, Tensor) else torch.full_like(last, stamp_ns)
        fitted_log_scale = fitted_log_scale.to(torch.float64)
        elapsed_s = (stamp - last).to(torch.float64) / 1e9
        restart = ~has | (elapsed_s <= 0) | (self.time_constant_s <= 0)
        gain = 1.0 - torch.exp(-elapsed_s.clamp(min=0) / max(self.time_constant_s, 1e-12))
        filtered = torch.where(restart, fitted_log_scale, log_scale + gain * (fitted_log_scale - log_scale))
        holding = ~fitted & has & (elapsed_s >= 0) & (elapsed_s <= self.hold_s)
        new_log = torch.where(fitted, filtered, torch.where(holding, log_scale, torch.zeros_like(log_scale)))
        new_last = torch.where(fitted, stamp, last)
        new_has = fitted | holding
        log_scale.copy_(new_log)
        last.copy_(new_last)
        has.copy_(new_has)
        scale = torch.where(new_has, torch.exp(new_log), torch.ones_like(new_log))
        state = torch.where(fitted, 1, torch.where(holding, 2, 0))
        return scale, state

    def update(self, stamp_ns: int, fitted_log_scale: Optional[float]) -> Tuple[float, str]:
        """:meth:`update_static` with a host value (None: no fit), read back: (scale, state)."""
        device = self.log_scale.device if self.log_scale is not None else torch.device("cpu")
        value = torch.tensor(0.0 if fitted_log_scale is None else fitted_log_scale, dtype=torch.float64,
                             device=device)
        scale, state = self.update_static(stamp_ns, value, torch.tensor(fitted_log_scale is not None, device=device))
        return float(scale), STATES[int(state)]


class ScaleAligner:
    """Aligns one camera's depth to its sparse reference, frame after frame (see the module's docstring)."""

    def __init__(self, *, holdout: float, min_points: int, time_constant_s: float, hold_s: float, min_depth: float,
                 max_depth: float) -> None:
        self.tracker = ScaleTracker(time_constant_s, hold_s)
        self.configure(holdout, min_points, time_constant_s, hold_s, min_depth, max_depth)

    def configure(self, holdout: float, min_points: int, time_constant_s: float, hold_s: float, min_depth: float,
                  max_depth: float) -> None:
        """New parameter values; the filtered scale carries on."""
        self.holdout, self.min_points = float(holdout), int(min_points)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.tracker.time_constant_s, self.tracker.hold_s = float(time_constant_s), float(hold_s)

    def align(self, depth: Tensor, reference: Union[None, Tensor, Tuple[Tensor, Tensor]], stamp_ns: int,
              reason: str = "") -> ScaleFit:
        """Scale ``depth`` (H, W, the model's metres, on its device) in place by the filtered scale after fitting
        this frame's ``reference``: (H, W) depth with 0 = none, or (flat pixel indices, depths) with depth 0 for
        an unused slot (what :func:`sparse` or :func:`space_clip_ros.geometry.project_points_static` make); None
        when there is none: ``reason`` says why. :meth:`align_static`, then its numbers read on the host."""
        return self.resolve(self.align_static(depth, reference, stamp_ns).cpu(), reason)

    def align_static(self, depth: Tensor, reference: Union[None, Tensor, Tuple[Tensor, Tensor]],
                     stamp_ns: Union[int, Tensor]) -> Tensor:
        """:meth:`align` without reading anything on the host: ``depth`` scaled in place, and the frame's numbers
        as a float64 tensor of :data:`STAT_FIELDS` on the device (for :meth:`resolve` after the frame's download).
        Every shape is fixed by the reference's buffer size; ``stamp_ns`` may be a 0-d int64 tensor on the device
        (then no per-frame value is a Python number: a CUDA graph can replay it)."""
        device = depth.device
        if reference is None:
            pixels = torch.zeros(1, dtype=torch.int64, device=device)
            values = torch.zeros(1, dtype=torch.float32, device=device)
        elif isinstance(reference, Tensor):
            pixels = torch.arange(reference.numel(), device=device)
            values = reference.reshape(-1).to(device, non_blocking=True)
        else:
            pixels = torch.as_tensor(reference[0]).to(device, non_blocking=True)
            values = torch.as_tensor(reference[1]).to(device, non_blocking=True)
        pred = depth.reshape(-1).index_select(0, pixels).float()
        ref = values.float()
        usable = (pred > 0) & (pred < math.inf) & (ref >= self.min_depth) & (ref <= self.max_depth)  # NaN fails
        log_ratio = torch.log(torch.where(usable, ref, torch.ones_like(ref))) \
            - torch.log(torch.where(usable, pred, torch.ones_like(pred)))
        held = usable & holdout_mask(pixels, self.holdout, stamp_ns)
        used = usable & ~held
        points, held_out = used.sum(), held.sum()
        fitted = points >= self.min_points
        log_scale, inliers = robust_log_scale_static(log_ratio, used)
        log_scale = torch.where(fitted, log_scale, torch.zeros_like(log_scale))
        scale, state = self.tracker.update_static(stamp_ns, log_scale, fitted)
        depth.mul_(scale.to(depth.dtype))
        before, _ = accuracy_static(log_ratio, held)
        after, delta1 = accuracy_static(log_ratio, held, torch.log(scale).to(log_ratio.dtype))
        nan = torch.full((), math.nan, dtype=torch.float64, device=device)
        inlier_fraction = inliers.sum().to(torch.float64) / points.clamp(min=1)
        return torch.stack([torch.where(fitted, log_scale.to(torch.float64), nan), scale, state.to(torch.float64),
                            points.to(torch.float64), torch.where(fitted, inlier_fraction, nan),
                            held_out.to(torch.float64), before.to(torch.float64), after.to(torch.float64),
                            delta1.to(torch.float64)])

    def resolve(self, stats: Tensor, reason: str = "") -> ScaleFit:
        """The :class:`ScaleFit` of :meth:`align_static`'s numbers, downloaded."""
        values = dict(zip(STAT_FIELDS, stats.tolist(), strict=True))
        points, held_out = int(values["points"]), int(values["held_out"])
        fitted = None if math.isnan(values["fitted_log"]) else math.exp(values["fitted_log"])
        if fitted is None and not reason:
            reason = f"{points} reference points in the image, fewer than scale_min_points {self.min_points}"
        return ScaleFit(fitted, values["applied"], STATES[int(values["state"])], points=points,
                        inlier_fraction=values["inlier_fraction"], held_out=held_out,
                        abs_rel_before=values["abs_rel_before"],
                        abs_rel_after=values["abs_rel_after"] if held_out else math.nan,
                        delta1_after=values["delta1_after"] if held_out else math.nan,
                        reason="" if fitted is not None else reason)
