"""Command lines of the trainers: train_kitti.py and train_nyu.py parse their options here into a TrainConfig and
start the Trainer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from . import config as cfgmod
from .config import CONFIGS, PRECISIONS, TRAIN_DIR, ConfigError, TrainConfig, TrainingError
from .datasets import DATASETS


def _workers(value: str):
    """--workers: auto or a number >= 0."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"auto or a number >= 0, got {value!r}")
    return number


def build_parser(dataset: str = "kitti") -> argparse.ArgumentParser:
    about = DATASETS[dataset]
    p = argparse.ArgumentParser(prog=about.prog, description=f"Train SPACE-CLIP's decoder on {dataset.upper()} "
                                "over a frozen CLIP tower (one process, one GPU, or many under torchrun).")
    default = (CONFIGS / about.config).relative_to(TRAIN_DIR.parent)
    p.add_argument("--config", type=Path, help=f"YAML config (default {default}; its dataset key decides what is "
                   "trained)")
    p.add_argument("--data-path", help=about.data_path_help)
    p.add_argument("--gt-path", help=about.gt_path_help)
    p.add_argument("--filenames", help="training list, BTS format (default: the config's)")
    p.add_argument("--filenames-eval", help="validation list (default: the config's)")
    p.add_argument("--batch-size", type=int, help="global batch size (split over torchrun processes)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps, then validate and save")
    p.add_argument("--backbone", help="hub id or local folder of the frozen CLIP tower (overrides the config's)")
    p.add_argument("--out", type=Path, help="run folder for config.yaml, checkpoints, metrics and TensorBoard logs")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (torchrun: each process uses its LOCAL_RANK GPU)")
    p.add_argument("--workers", type=_workers, help="data loading processes per training process (auto: one per "
                   "core beside each training process, at most 16)")
    p.add_argument("--resume", type=Path, help="a last.pt (or best.pt) of an earlier run: continue it exactly")
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=PRECISIONS, help="autocast precision of the forward pass (auto: bf16 on "
                   "CUDA, fp32 on the CPU)")
    p.add_argument("--strict", action="store_true", default=None, help="a bad list line is an error, not a skip")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set lr=2e-4 --set model.use_film=false (repeatable)")
    return p


def resolve(args: argparse.Namespace, dataset: str = "kitti") -> TrainConfig:
    """The run's configuration from the command line; ConfigError says what is wrong and what to pass."""
    named = {"data_path": args.data_path, "gt_path": args.gt_path, "filenames": args.filenames,
             "filenames_eval": args.filenames_eval, "batch_size": args.batch_size, "epochs": args.epochs,
             "max_steps": args.max_steps, "backbone": args.backbone, "device": args.device, "workers": args.workers,
             "seed": args.seed, "precision": args.precision, "strict": args.strict,
             "out": str(args.out) if args.out else None}
    config = cfgmod.resolve_config(args.config or CONFIGS / DATASETS[dataset].config, args.assignments, **named)
    if config.dataset == "kitti":
        if not config.data_path or not config.gt_path:
            raise ConfigError("set --data-path (KITTI raw root) and --gt-path (annotated depth root)")
        folders = (("data_path", "the KITTI raw root with date folders"),
                   ("gt_path", "the annotated depth root with train/ and val/"))
    elif config.dataset == "folder":
        if not config.data_path:
            raise ConfigError("set --data DIR (a training folder written by space-clip-bag2dataset)")
        folders = (("data_path", "the training folder"),)
    else:
        if not config.data_path:
            raise ConfigError("set --data-path (the NYU Depth v2 root holding sync/ and official_splits/test/)")
        folders = (("data_path", "the NYU Depth v2 root with sync/ and official_splits/test/"),) + (
            (("gt_path", "the NYU depth root"),) if config.gt_path else ())
    for key, what in folders:
        if not Path(getattr(config, key)).is_dir():
            raise ConfigError(f"--{key.replace('_', '-')} {getattr(config, key)} is not a folder ({what})")
    for key in ("filenames", "filenames_eval"):
        if not cfgmod.list_path(getattr(config, key)).is_file():
            raise ConfigError(f"--{key.replace('_', '-')} {getattr(config, key)} does not exist")
    return config


def main(argv: Optional[List[str]] = None, dataset: str = "kitti") -> int:
    """Parse, configure and train; 2 on a configuration or data error (the message says which)."""
    from .trainer import Trainer

    prog = DATASETS[dataset].prog
    args = build_parser(dataset).parse_args(argv)
    try:
        config = resolve(args, dataset)
    except ConfigError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return run(prog, lambda: Trainer(config, resume=args.resume).fit())


def run(prog: str, train) -> int:
    """Run ``train()``; missing files return 2 with the message, and a :class:`ConfigError` or
    :class:`TrainingError` from the library ends the process with ``prog: error: ...`` (exit status 1)."""
    try:
        train()
    except FileNotFoundError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except (ConfigError, TrainingError) as error:
        raise SystemExit(f"{prog}: error: {error}") from None
    return 0
