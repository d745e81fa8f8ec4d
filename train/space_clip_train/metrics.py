"""Depth metrics and the evaluation protocols of KITTI (docs/evaluation.md says which to compare) and NYU.

Metrics are computed per image on its valid pixels and then averaged over images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

from . import nyu, protocols
from .data import pil_resize
from .kitti import MAX_DEPTH, MIN_DEPTH, crop_mask

KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog", "log10")
COLUMNS = (("abs_rel", "AbsRel"), ("sq_rel", "SqRel"), ("rmse", "RMSE"), ("rmse_log", "RMSE log"), ("a1", "d1"),
           ("a2", "d2"), ("a3", "d3"), ("silog", "SILog"), ("log10", "log10"))
#: The protocols of each dataset (protocols.py holds them: NYU has no paper protocol, the paper reports none).
DATASET_PROTOCOLS = {dataset: protocols.names(dataset) for dataset, _ in protocols.PROTOCOLS}
PROTOCOLS = DATASET_PROTOCOLS["kitti"]


def prediction_size(protocol: str, dataset: str = "kitti"):
    """The (H, W) predictions must have under ``protocol``, or None: the ground truth's own size."""
    entry = protocols.PROTOCOLS.get((dataset, protocol))
    return entry.fixed_size if entry else None


def compute_errors(gt: np.ndarray, pred: np.ndarray) -> Dict[str, float]:
    """All metrics for matching 1-D arrays of valid ground truth and (clamped) predictions, in metres."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 1 or gt.size == 0:
        raise ValueError(f"need two equal, non-empty 1-D arrays, got {gt.shape} and {pred.shape}")
    ratio = np.maximum(gt / pred, pred / gt)
    err = np.log(pred) - np.log(gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(err ** 2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25 ** 2)),
        "a3": float(np.mean(ratio < 1.25 ** 3)),
        "silog": float(100.0 * np.sqrt(max(np.mean(err ** 2) - np.mean(err) ** 2, 0.0))),
        "log10": float(np.mean(np.abs(np.log10(gt) - np.log10(pred)))),
    }


def resize_prediction(pred: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of a (h, w) prediction to the ground truth's (H, W)."""
    import cv2

    if pred.shape == tuple(size):
        return pred
    return cv2.resize(pred.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def evaluate_image(gt: np.ndarray, pred: np.ndarray, protocol: str = "standard", crop: str = "garg",
                   min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH,
                   dataset: str = "kitti") -> Optional[Dict[str, float]]:
    """Metrics of one prediction against its ground truth; None when no pixel is valid.

    KITTI (``dataset="kitti"``):
    ``standard``: ``gt`` at full resolution, ``pred`` resized (bilinear) to it, ``crop`` garg|eigen|none, valid gt in
    (min_depth, max_depth), prediction clamped to [min_depth, max_depth].
    ``spaceclip``: the release's path: ``gt`` (full resolution) is resized NEAREST to 352x704 here and ``pred`` must
    be the model's 352x704 output; the Eigen crop on that map; predictions clamped, then non-positive or non-finite
    ones dropped.
    ``paper``: how the paper's tables were measured (the authors' first code version): ``gt`` resized NEAREST to
    352x704, ``pred`` the model's 352x704 output, NO crop, valid gt in (min_depth, max_depth), per-image MEDIAN
    SCALING (pred * median(gt) / median(pred), by 1 when median(pred) <= 1e-6), no clamp. Scale-recovered numbers.

    NYU Depth v2 (``dataset="nyu"``, depth 1e-3..10 m):
    ``standard``: as BTS and AdaBins: ``pred`` resized to ``gt``, ``crop`` eigen (rows 45:471, columns 41:601) or
    none, clamped; ``spaceclip``: the release's: ``pred`` the model's 480x640 output, no crop, clamped, non-finite
    predictions dropped.
    """
    if protocol not in DATASET_PROTOCOLS.get(dataset, ()):
        raise ValueError(f"protocol must be one of {DATASET_PROTOCOLS.get(dataset)} for {dataset!r}, got "
                         f"{protocol!r}" if dataset in DATASET_PROTOCOLS else
                         f"dataset must be one of {sorted(DATASET_PROTOCOLS)}, got {dataset!r}")
    gt = np.asarray(gt, dtype=np.float32)
    pred = np.asarray(pred, dtype=np.float32)
    size = prediction_size(protocol, dataset)
    if size is not None:
        if pred.shape != size:
            raise ValueError(f"the {dataset} {protocol} protocol needs {size[0]}x{size[1]} predictions, got "
                             f"{pred.shape}")
        if gt.shape != size:
            gt = pil_resize(gt, size, "nearest")
    entry = protocols.protocol(dataset, protocol)
    crop = entry.crop or crop  # the fixed-size protocols have their own crop
    if entry.median_scaling:
        valid = (gt > min_depth) & (gt < max_depth)
        if not valid.any():
            return None
        gt_valid, pred_valid = gt[valid].astype(np.float64), pred[valid].astype(np.float64)
        median_pred = np.median(pred_valid)
        scale = np.median(gt_valid) / median_pred if median_pred > 1e-6 else 1.0
        # No clamp, as the first version: a zero prediction gives infinite log errors (reported, not hidden).
        with np.errstate(divide="ignore", invalid="ignore"):
            return compute_errors(gt_valid, pred_valid * scale)
    pred = resize_prediction(pred, gt.shape)
    valid = (gt > min_depth) & (gt < max_depth)
    mask = crop_mask(gt.shape, crop) if dataset == "kitti" else nyu.crop_mask(gt.shape, crop)  # folder: none
    if mask is not None:
        valid &= mask
    gt_valid = gt[valid]
    pred_valid = np.clip(pred[valid], min_depth, max_depth) if entry.clamp else pred[valid]
    finite = np.isfinite(pred_valid) & (pred_valid > 1e-6)
    if protocol == "standard" and not finite.all():
        raise ValueError(f"{int((~finite).sum())} non-finite predictions inside the evaluated region")
    gt_valid, pred_valid = gt_valid[finite], pred_valid[finite]
    if gt_valid.size == 0:
        return None
    return compute_errors(gt_valid, pred_valid)


class MetricAverager:
    """Mean of per-image metrics; mergeable across processes via ``state``/``merge``."""

    def __init__(self):
        self.sums = {k: 0.0 for k in KEYS}
        self.count = 0

    def update(self, metrics: Optional[Dict[str, float]]) -> None:
        if metrics is None:
            return
        for key in KEYS:
            self.sums[key] += metrics[key]
        self.count += 1

    def state(self) -> List[float]:
        return [self.sums[k] for k in KEYS] + [float(self.count)]

    def merge(self, state: Iterable[float]) -> None:
        state = list(state)
        for key, value in zip(KEYS, state, strict=False):
            self.sums[key] += value
        self.count += int(round(state[-1]))

    def result(self) -> Dict[str, float]:
        if self.count == 0:
            raise ValueError("no image had valid ground truth: nothing was evaluated")
        out = {k: self.sums[k] / self.count for k in KEYS}
        out["n_images"] = self.count
        return out


def format_table(results: Dict[str, float], title: str = "") -> str:
    """The paper's Table 1 columns plus SILog, log10 and the number of images."""
    head = " ".join(f"{name:>9}" for _, name in COLUMNS) + f" {'images':>7}"
    row = " ".join(f"{results[key]:9.4f}" if key != "silog" else f"{results[key]:9.3f}" for key, _ in COLUMNS)
    lines = [title] if title else []
    return "\n".join(lines + [head, row + f" {int(results['n_images']):7d}"])


def write_json(results: Dict[str, float], path, **extra) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**{k: results[k] for k in (*KEYS, "n_images")}, **extra}, indent=2) + "\n")
