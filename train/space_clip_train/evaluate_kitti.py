"""Evaluate a checkpoint, or any method's saved predictions, on KITTI: the standard protocol, the release's, or the
paper's (see docs/evaluation.md, "Which numbers to compare").

    python train/evaluate.py --dataset kitti --checkpoint runs/kitti_paper/best.pt --data-path RAW --gt-path ANNOTATED
    python train/evaluate.py --dataset kitti --pred-dir PREDS --gt-path ANNOTATED --out results.json
    python train/evaluate.py --dataset kitti --checkpoint C --data-path RAW \\
        --filenames splits/eigen_test_files.txt --gt-path gt_eigen.npz   # 697 frames, Velodyne ground truth

--pred-dir holds one file per list line at the image's relative path with the extension .npy (float32 metres) or
.png (uint16, metres x 256). Metrics are averaged over images; no median scaling (metric depth), except under
--protocol paper, which rescales each prediction by median(gt) / median(pred) as the paper's tables did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import protocols
from .config import list_path
from .data import Sample, SkipReport, read_list
from .evaluation import (
    add_run_options,
    evaluate_saved,
    evaluation_parser,
    load_for_evaluation,
    read_prediction,
    report,
    settle_crop,
)
from .kitti import (
    EIGEN_TEST,
    KITTI_CROP_SIZE,
    MAX_DEPTH,
    MIN_DEPTH,
    read_depth_png,
    resolve_depth_path,
)
from .metrics import (
    PROTOCOLS,
    evaluate_image,
    resize_prediction,
)


class GroundTruth:
    """Full-resolution ground truth per list line: annotated PNGs under a root, or an npz from export_gt_depth.py."""

    def __init__(self, source: Path):
        self.source = Path(source)
        self.npz = None
        if self.source.suffix == ".npz":
            if not self.source.is_file():
                raise FileNotFoundError(f"ground truth {source} does not exist")
            self.npz = np.load(self.source, allow_pickle=False)
            if "images" not in self.npz:
                raise ValueError(f"{source} is not an export_gt_depth.py file (no 'images' key); monodepth2's "
                                 "pickled gt_depths.npz is not read: export it again with train/export_gt_depth.py")
            self.index = {name: i for i, name in enumerate(self.npz["images"].tolist())}
        elif not self.source.is_dir():
            raise FileNotFoundError(f"--gt-path {source} is neither an annotated depth folder nor an .npz")

    def usable(self, sample: Sample) -> bool:
        """False for the test lines without annotated depth (the 45 'None' lines): they are not evaluated."""
        return self.npz is not None or sample.depth is not None

    def __call__(self, sample: Sample) -> np.ndarray:
        if self.npz is not None:
            if sample.image not in self.index:
                raise ValueError(f"{sample.image} is not in {self.source}")
            return self.npz[f"depth_{self.index[sample.image]:05d}"].astype(np.float32)
        path = resolve_depth_path(self.source, sample.depth)
        if path is None:
            raise ValueError(f"no annotated depth {sample.depth} under {self.source} (or its train/, val/)")
        return read_depth_png(path)


def evaluate_predictions(pred_dir: Path, samples: List[Sample], gt: GroundTruth, protocol: str, crop: str,
                         skips: SkipReport, strict: bool) -> Dict[str, float]:
    def score(depth: np.ndarray, pred: np.ndarray):
        if protocol == "paper" and pred.shape != KITTI_CROP_SIZE:
            # The authors' first version resized its own (224) output bilinearly to 352x704: any size goes the same way.
            pred = resize_prediction(pred, KITTI_CROP_SIZE)
        return evaluate_image(depth, pred, protocol, crop, MIN_DEPTH, MAX_DEPTH)

    return evaluate_saved(samples, lambda _, sample: gt(sample),
                          lambda sample: read_prediction(pred_dir, sample.image, read_depth_png), score, skips, strict)


def evaluate_checkpoint(args, samples: List[Sample], gt: GroundTruth) -> Dict[str, float]:
    from space_clip_ros.device import autocast_dtype, resolve_device

    from .evaluation import eval_loader, evaluate
    from .kitti import KittiDepth

    if not args.data_path:
        raise ValueError("--checkpoint needs --data-path (the KITTI raw root with the images)")
    device = resolve_device(args.device)
    model = load_for_evaluation(args, "kitti", device)
    pre = model.preprocessing
    dataset = KittiDepth(args.filenames, args.data_path, None, "eval", pre.input_size, pre.mean, pre.std,
                         strict=args.strict, require_depth=False)
    dataset.samples = list(samples)  # only the lines with ground truth

    def by_index(index: int) -> Optional[np.ndarray]:
        try:
            return gt(dataset.samples[index])
        except ValueError as error:
            if args.strict:
                raise FileNotFoundError(f"line {dataset.samples[index].line_no}: {error} (--strict)") from None
            args.skips.skip(dataset.samples[index], str(error))
            return None
    loader = eval_loader(dataset, workers=args.workers, batch_size=args.batch_size)
    dtype = autocast_dtype(args.precision, device)
    results, _ = evaluate(model, loader, device, args.protocol, args.crop, args.flip_tta, MIN_DEPTH, MAX_DEPTH,
                          autocast_dtype=dtype, progress=True, ground_truth=by_index)
    for sample, reason in dataset.skips.skipped:
        args.skips.skip(sample, reason)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = evaluation_parser(__doc__)
    p.add_argument("--filenames", default=str(EIGEN_TEST), help="list (BTS or monodepth2 format); default the Eigen "
                   "test list (697 lines, 652 with annotated depth)")
    p.add_argument("--data-path", type=Path, help="KITTI raw root (needed with --checkpoint)")
    p.add_argument("--gt-path", type=Path, required=True,
                   help="annotated depth root (drives under train/ and val/) or an .npz from export_gt_depth.py")
    p.add_argument("--protocol", choices=PROTOCOLS, default="standard", help=protocols.help_text("kitti"))
    p.add_argument("--crop", choices=("garg", "eigen", "none"), default="garg",
                   help="standard protocol crop (the spaceclip protocol always uses eigen)")
    add_run_options(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    settle_crop(args, "kitti")
    try:
        args.filenames = list_path(args.filenames)
        all_samples = read_list(args.filenames)
        gt = GroundTruth(args.gt_path)
        samples = [s for s in all_samples if gt.usable(s)]
        args.skips = SkipReport(str(args.filenames))
        if args.checkpoint:
            results = evaluate_checkpoint(args, samples, gt)
        else:
            results = evaluate_predictions(args.pred_dir, samples, gt, args.protocol, args.crop, args.skips,
                                           args.strict)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    source = str(args.checkpoint or args.pred_dir)
    title = (f"{source}: {args.protocol} protocol, crop {args.crop}, depth {MIN_DEPTH:g}..{MAX_DEPTH:g} m"
             + (", flip TTA" if args.flip_tta else "") + f", {len(samples)} of {len(all_samples)} lines with gt")
    report(results, title, args, protocol=args.protocol, crop=args.crop, flip_tta=args.flip_tta, source=source)
    return 0
