"""Evaluate a checkpoint on your own recording: a folder written by space-clip-bag2dataset (images/, depth/,
train.txt, val.txt, camera.yaml), frame by frame as the depth node would see it (the full image, its focal length,
the node's focal-length scale transfer), against the recording's projected lidar or RGB-D depth.

    python train/evaluate.py --dataset folder --data DIR --checkpoint CKPT
    python train/evaluate.py --dataset folder --data DIR --checkpoint CKPT --align scale --csv frames.csv

--align says what the numbers are: ``none`` the model's metric depth as published; ``median`` per-frame median
scaling (median(gt) / median(pred), as the paper's protocol); ``scale`` the node's scale alignment
(space_clip_ros.alignment: the robust log-domain fit the node makes to a live range sensor, here to the frame's own
ground truth). ``none`` against ``scale`` shows what a range sensor on the robot would buy. Metrics are averaged
over frames (standard protocol: no crop, prediction clamped to the depth range); --csv writes one row per frame
with the scale applied.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from .data import SkipReport, read_list
from .evaluation import add_run_options, load_for_evaluation, report
from .folder import FolderDepth, read_camera
from .metrics import KEYS, MetricAverager, evaluate_image

ALIGNMENTS = ("none", "median", "scale")


def align_prediction(pred: np.ndarray, gt: np.ndarray, how: str, min_depth: float, max_depth: float) -> float:
    """The scale ``how`` puts on ``pred`` for ground truth ``gt`` (0 = none); 1.0 when there is nothing to fit."""
    if how == "none":
        return 1.0
    valid = (gt > min_depth) & (gt < max_depth) & np.isfinite(pred) & (pred > 0)
    if not valid.any():
        return 1.0
    if how == "median":
        return float(np.median(gt[valid]) / np.median(pred[valid]))
    import torch

    from space_clip_ros.alignment import ScaleAligner

    aligner = ScaleAligner(holdout=0.0, min_points=1, time_constant_s=0.0, hold_s=0.0, min_depth=min_depth,
                           max_depth=max_depth)
    fit = aligner.align(torch.from_numpy(pred.copy()), torch.from_numpy(np.where(valid, gt, 0.0)), 0)
    return fit.applied


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py --dataset folder", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", type=Path, required=True, help="the folder (space-clip-bag2dataset's output)")
    p.add_argument("--checkpoint", type=Path, required=True, help="a space_clip_ros checkpoint to run")
    p.add_argument("--list", default="val.txt", help="list file in the folder (default val.txt; train.txt, or a "
                   "path)")
    p.add_argument("--align", choices=ALIGNMENTS, default="none", help="scale put on each prediction (see above)")
    p.add_argument("--csv", type=Path, help="write one row per frame (metrics and scale) here")
    p.add_argument("--min-depth", type=float, default=0.1)
    p.add_argument("--max-depth", type=float, default=80.0)
    add_run_options(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results, rows, count = evaluate(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image", "depth", "scale", *KEYS])
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv} ({len(rows)} frames)")
    report(results, f"{args.checkpoint}: {args.data} ({args.list}), align {args.align}, depth "
           f"{args.min_depth:g}..{args.max_depth:g} m, {count} lines", args,
           dataset="folder", align=args.align, data=str(args.data), source=str(args.checkpoint))
    return 0


def evaluate(args) -> "tuple[Dict[str, float], List[Dict[str, object]], int]":
    from space_clip_ros import DepthEstimator

    read_camera(args.data)  # a folder without its camera.yaml fails here, saying so
    list_file = Path(args.list) if Path(args.list).is_file() else args.data / args.list
    if not list_file.is_file():
        raise FileNotFoundError(f"{list_file} does not exist (--list: a list file in {args.data}, or a path)")
    samples = read_list(list_file)
    args.skips = SkipReport(str(list_file))
    dataset = FolderDepth(list_file, args.data, None, "eval", strict=args.strict)
    model = load_for_evaluation(args, None)  # a robot's own data: any checkpoint may be fine-tuned for it
    estimator = DepthEstimator(model, device=args.device, precision=args.precision)
    averager, rows = MetricAverager(), []
    for index, sample in enumerate(dataset.samples):
        try:
            rgb, gt = dataset.load(index)
            if gt is None:
                raise ValueError("the line has no depth")
        except ValueError as error:
            if args.strict:
                raise
            args.skips.skip(sample, str(error))
            continue
        fx = sample.focal if sample.focal > 0 else None
        pred = estimator(rgb, fx=fx, output_size=gt.shape)
        if args.flip_tta:
            pred = 0.5 * (pred + estimator(np.ascontiguousarray(rgb[:, ::-1]), fx=fx, output_size=gt.shape)[:, ::-1])
        scale = align_prediction(pred, gt, args.align, args.min_depth, args.max_depth)
        metrics = evaluate_image(gt, pred * scale, "standard", "none", args.min_depth, args.max_depth, "folder")
        if metrics is None:
            args.skips.skip(sample, "no ground truth pixel within the depth range")
            continue
        averager.update(metrics)
        rows.append({"image": sample.image, "depth": sample.depth, "scale": f"{scale:.6f}",
                     **{k: f"{metrics[k]:.6f}" for k in KEYS}})
    return averager.result(), rows, len(samples)
