"""The evaluation protocols, one entry each: what is compared, how, and with what the numbers compare. The metrics
(:func:`space_clip_train.metrics.evaluate_image`), the configs' checks, the trainers' final reports, ablate.py and
the evaluation scripts' help all read this table (docs/evaluation.md explains it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .kitti import KITTI_CROP_SIZE
from .nyu import NYU_SIZE


@dataclass(frozen=True)
class Protocol:
    dataset: str
    name: str
    #: Predictions must be the model's output at this size (the ground truth is resized NEAREST to it); None: the
    #: prediction is resized to the full-resolution ground truth.
    fixed_size: Optional[Tuple[int, int]]
    #: The crop it always uses, or None: the run's / command's crop (``eval_crop``, ``--crop``).
    crop: Optional[str]
    median_scaling: bool
    clamp: bool
    #: How it is measured and what to compare its numbers with.
    compare_with: str

    def describe(self, crop: str = "") -> str:
        return self.compare_with.format(crop=self.crop or crop or "the run's")


PROTOCOLS: Dict[Tuple[str, str], Protocol] = {(p.dataset, p.name): p for p in (
    Protocol("kitti", "standard", None, None, False, True,
             "full-resolution ground truth, {crop} crop, prediction clamped, metric: compare with other metric "
             "methods (BTS, AdaBins, ...)"),
    Protocol("kitti", "spaceclip", KITTI_CROP_SIZE, "eigen", False, True,
             "the release's 352x704 path, Eigen crop, metric: compare with the release's README"),
    Protocol("kitti", "paper", KITTI_CROP_SIZE, "none", True, False,
             "352x704, no crop, per-image median scaling (the authors' first version): compare with the paper's "
             "Tables 1-2"),
    Protocol("nyu", "standard", None, None, False, True,
             "BTS/AdaBins protocol, {crop} crop, 1e-3..10 m, prediction clamped, metric"),
    Protocol("nyu", "spaceclip", NYU_SIZE, "none", False, True,
             "the release's 480x640 path, no crop, metric: compare with the release's README"),
    Protocol("folder", "standard", None, "none", False, True,
             "full-resolution ground truth of your recordings, no crop, prediction clamped, metric"),
)}


def protocol(dataset: str, name: str) -> Protocol:
    try:
        return PROTOCOLS[(dataset, name)]
    except KeyError:
        raise ValueError(f"protocol must be one of {names(dataset)} for {dataset!r}, got {name!r}") from None


def names(dataset: str) -> Tuple[str, ...]:
    """The protocols of ``dataset``, in the table's order."""
    return tuple(n for d, n in PROTOCOLS if d == dataset)


def help_text(dataset: str) -> str:
    """``--protocol`` help: every protocol of ``dataset`` with its description."""
    return "; ".join(f"{p.name}: {p.describe('--crop')}" for (d, _), p in PROTOCOLS.items() if d == dataset)
