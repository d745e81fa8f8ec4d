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


def sparse(reference: Union[Tensor, np.ndarray]) -> Tuple[Tensor, Tensor]:
    """(flat pixel indices, depths) of the measured pixels (> 0) of a sparse (H, W) depth image."""
    if isinstance(reference, np.ndarray):
        pixels = np.flatnonzero(reference)
        return torch.from_numpy(pixels), torch.from_numpy(reference.reshape(-1)[pixels])
    flat = reference.reshape(-1)
    pixels = (flat > 0).nonzero(as_tuple=True)[0]
    return pixels, flat[pixels]


def holdout_mask(pixels: Tensor, share: float, seed: int) -> Tensor:
    """True for the held-out share of ``pixels`` (flat pixel indices, int64): a hash of index and ``seed`` (the
    frame's stamp), so the held-out pixels change from frame to frame and are the same for the same frame."""
    if share <= 0:
        return torch.zeros(pixels.shape, dtype=torch.bool, device=pixels.device)
    mixed = ((pixels + (seed % 1_000_003)) * _HASH) & 0xFFFFFFFF
    mixed = ((mixed ^ (mixed >> 15)) * 2246822519) & 0xFFFFFFFF  # spread neighbouring indices apart
    return mixed.to(torch.float64) < share * 2.0 ** 32


def robust_log_scale(log_ratio: Tensor) -> Tuple[float, Tensor]:
    """(log scale, inlier mask) of log ratios ``log(reference / depth)``: median, MAD band, inlier mean, and once
    more around that mean."""
    center = log_ratio.median()
    inliers = torch.ones_like(log_ratio, dtype=torch.bool)
    for _ in range(2):
        deviation = (log_ratio - center).abs()
        mad = deviation[inliers].median() * 1.4826
        inliers = deviation <= torch.clamp(mad * OUTLIER_MADS, min=MIN_LOG_BAND)
        center = log_ratio[inliers].mean()
    return float(center), inliers


def accuracy(log_ratio: Tensor, log_scale: float = 0.0) -> Tuple[float, float]:
    """(AbsRel, delta1) of depth x exp(``log_scale``) against the reference, from ``log_ratio`` = log(reference /
    depth) per pixel: the depth's ratio to the reference is exp(log_scale - log_ratio)."""
    shifted = log_scale - log_ratio
    abs_rel = (torch.exp(shifted) - 1.0).abs().mean()
    delta1 = (shifted.abs() < math.log(1.25)).float().mean()
    return float(abs_rel), float(delta1)


class ScaleTracker:
    """The scale over time: ``time_constant_s`` of the exponential filter of the log scale (0: each frame's fit
    as it is), ``hold_s`` how long the last scale stays after the reference stops."""

    def __init__(self, time_constant_s: float, hold_s: float) -> None:
        self.time_constant_s, self.hold_s = float(time_constant_s), float(hold_s)
        self.log_scale: Optional[float] = None
        self.last_fit_ns: Optional[int] = None

    def reset(self) -> None:
        self.log_scale, self.last_fit_ns = None, None

    def update(self, stamp_ns: int, fitted_log_scale: Optional[float]) -> Tuple[float, str]:
        """(the scale to apply at ``stamp_ns``, state) after this frame's fit (None when it had none)."""
        if fitted_log_scale is not None:
            if self.log_scale is None or self.last_fit_ns is None or stamp_ns <= self.last_fit_ns:
                self.log_scale = fitted_log_scale  # the first fit, or time went back: start over
            elif self.time_constant_s > 0:
                gain = 1.0 - math.exp(-(stamp_ns - self.last_fit_ns) / 1e9 / self.time_constant_s)
                self.log_scale += gain * (fitted_log_scale - self.log_scale)
            else:
                self.log_scale = fitted_log_scale
            self.last_fit_ns = stamp_ns
            return math.exp(self.log_scale), "aligned"
        if self.log_scale is not None and self.last_fit_ns is not None:
            age = (stamp_ns - self.last_fit_ns) / 1e9
            if 0 <= age <= self.hold_s:
                return math.exp(self.log_scale), "holding"
            self.reset()  # the reference stopped long ago (or time went back): the model's own scale again
        return 1.0, "unaligned"


class ScaleAligner:
    """Aligns one camera's depth to its sparse reference, frame after frame (see the module's docstring)."""

    def __init__(self, holdout: float = 0.2, min_points: int = 50, time_constant_s: float = 2.0,
                 hold_s: float = 5.0, min_depth: float = 0.1, max_depth: float = 80.0) -> None:
        self.holdout, self.min_points = float(holdout), int(min_points)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.tracker = ScaleTracker(time_constant_s, hold_s)
        self._held: Optional[Tensor] = None  # this frame's held-out pixels: log(reference / depth)

    def configure(self, holdout: float, min_points: int, time_constant_s: float, hold_s: float, min_depth: float,
                  max_depth: float) -> None:
        """New parameter values; the filtered scale carries on."""
        self.holdout, self.min_points = float(holdout), int(min_points)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.tracker.time_constant_s, self.tracker.hold_s = float(time_constant_s), float(hold_s)

    def align(self, depth: Tensor, reference: Union[None, Tensor, Tuple[Tensor, Tensor]], stamp_ns: int,
              reason: str = "") -> ScaleFit:
        """Scale ``depth`` (H, W, the model's metres, on its device) in place by the filtered scale after fitting
        this frame's ``reference``: (H, W) depth with 0 = none, or its (flat pixel indices, depths) (what
        :func:`sparse` makes: only those go to the device); None when there is none: ``reason`` says why."""
        fitted, fit = None, ScaleFit(None, 1.0, "unaligned", reason=reason)
        if reference is not None:
            pixels, values = sparse(reference) if isinstance(reference, Tensor) else reference
            fit, fitted = self._fit(depth, torch.as_tensor(pixels).to(depth.device, non_blocking=True),
                                    torch.as_tensor(values).to(depth.device, non_blocking=True), stamp_ns)
        scale, fit.state = self.tracker.update(stamp_ns, fitted)
        fit.applied = scale
        if scale != 1.0:
            depth.mul_(scale)
        if fit.held_out:
            fit.abs_rel_after, fit.delta1_after = accuracy(self._held, math.log(scale))
        self._held = None
        return fit

    def _fit(self, depth: Tensor, pixels: Tensor, ref: Tensor, stamp_ns: int) -> Tuple[ScaleFit, Optional[float]]:
        pred = depth.reshape(-1)[pixels].float()
        ref = ref.float()
        usable = (pred > 0) & (pred < math.inf) & (ref >= self.min_depth) & (ref <= self.max_depth)  # NaN fails
        pixels = pixels[usable]
        log_ratio = torch.log(ref[usable]) - torch.log(pred[usable])
        held = holdout_mask(pixels, self.holdout, stamp_ns)
        fit_ratio, self._held = log_ratio[~held], log_ratio[held]
        fit = ScaleFit(None, 1.0, "unaligned", points=int(fit_ratio.numel()), held_out=int(self._held.numel()))
        if fit.held_out:
            fit.abs_rel_before, _ = accuracy(self._held)
        if fit.points < self.min_points:
            fit.reason = f"{fit.points} reference points in the image, fewer than scale_min_points {self.min_points}"
            return fit, None
        log_scale, inliers = robust_log_scale(fit_ratio)
        fit.inlier_fraction = float(inliers.float().mean())
        fit.fitted = math.exp(log_scale)
        return fit, log_scale
