"""Evaluate a checkpoint, or any method's saved predictions, on the NYU Depth v2 test set (654 images): the standard
protocol (Eigen crop rows 45:471, columns 41:601, 1e-3..10 m, as BTS and AdaBins) or the release's (``spaceclip``:
the model's 480x640 output, no crop).

    python train/evaluate.py --dataset nyu --checkpoint runs/nyu_release/best.pt --data-path NYU_ROOT
    python train/evaluate.py --dataset nyu --checkpoint C --data-path NYU_ROOT --protocol spaceclip --flip-tta
    python train/evaluate.py --dataset nyu --pred-dir PREDS --data-path NYU_ROOT

NYU_ROOT holds official_splits/test/<scene>/rgb_*.jpg and sync_depth_*.png (mm); the test folder itself works too.
--pred-dir holds one file per list line at the image's relative path with the extension .npy (float32 metres) or
.png (uint16 millimetres). Metrics are averaged over images; no median scaling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

from . import protocols
from .config import list_path
from .data import SkipReport
from .evaluation import (
    add_run_options,
    evaluate_saved,
    evaluation_parser,
    load_for_evaluation,
    read_prediction,
    report,
    settle_crop,
)
from .metrics import DATASET_PROTOCOLS, evaluate_image
from .nyu import MAX_DEPTH, MIN_DEPTH, NYU_TEST, NyuDepth, read_depth_png

PROTOCOLS = DATASET_PROTOCOLS["nyu"]


def evaluate_predictions(args, dataset: NyuDepth) -> Dict[str, float]:
    return evaluate_saved(dataset.samples, lambda index, _: dataset.load(index)[1],
                          lambda sample: read_prediction(args.pred_dir, sample.image, read_depth_png),
                          lambda gt, pred: evaluate_image(gt, pred, args.protocol, args.crop, MIN_DEPTH, MAX_DEPTH,
                                                          "nyu"), args.skips, args.strict)


def evaluate_checkpoint(args, dataset: NyuDepth) -> Dict[str, float]:
    from space_clip_ros.device import autocast_dtype, resolve_device

    from .evaluation import eval_loader, evaluate

    device = resolve_device(args.device)
    model = load_for_evaluation(args, "nyu", device)
    pre = model.preprocessing
    dataset.input_size, dataset.mean, dataset.std = tuple(pre.input_size), tuple(pre.mean), tuple(pre.std)
    dtype = autocast_dtype(args.precision, device)
    results, _ = evaluate(model, eval_loader(dataset, workers=args.workers, batch_size=args.batch_size), device,
                          args.protocol, args.crop, args.flip_tta, MIN_DEPTH, MAX_DEPTH, autocast_dtype=dtype,
                          progress=True)
    for sample, reason in dataset.skips.skipped:
        args.skips.skip(sample, reason)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = evaluation_parser(__doc__)
    p.add_argument("--data-path", type=Path, required=True,
                   help="NYU Depth v2 root (with official_splits/test/) or the test folder itself")
    p.add_argument("--filenames", default=str(NYU_TEST), help="test list (default: the 654-line NYU test list)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="standard", help=protocols.help_text("nyu"))
    p.add_argument("--crop", choices=("eigen", "none"), default="eigen", help="standard protocol crop")
    add_run_options(p)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    settle_crop(args, "nyu")
    args.skips = SkipReport(str(args.filenames))
    try:
        dataset = NyuDepth(list_path(args.filenames), args.data_path, None, "eval", strict=args.strict)
        results = evaluate_checkpoint(args, dataset) if args.checkpoint else evaluate_predictions(args, dataset)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    source = str(args.checkpoint or args.pred_dir)
    report(results, f"{source}: NYU {args.protocol} protocol, crop {args.crop}, depth {MIN_DEPTH:g}..{MAX_DEPTH:g} m"
           + (", flip TTA" if args.flip_tta else "") + f", {len(dataset)} lines", args,
           dataset="nyu", protocol=args.protocol, crop=args.crop, flip_tta=args.flip_tta, source=source)
    return 0
