"""Evaluate a checkpoint, or any method's saved predictions, on KITTI or NYU Depth v2 under its protocols (the
table in space_clip_train/protocols.py; docs/evaluation.md says which numbers to compare with what).

    python train/evaluate.py --dataset kitti --checkpoint runs/kitti_paper/best.pt --data-path RAW --gt-path DEPTH
    python train/evaluate.py --dataset kitti --pred-dir PREDS --gt-path DEPTH --protocol paper
    python train/evaluate.py --dataset nyu --checkpoint runs/nyu/best.pt --data-path NYU_ROOT [--protocol spaceclip]
    python train/evaluate.py --dataset folder --data DIR --checkpoint CKPT [--align none|median|scale] [--csv F]

``python train/evaluate.py --dataset kitti --help`` lists that dataset's options.
"""

import argparse
import sys
from typing import List, Optional

from space_clip_train import evaluate_folder, evaluate_kitti, evaluate_nyu

COMMANDS = {"kitti": evaluate_kitti.main, "nyu": evaluate_nyu.main, "folder": evaluate_folder.main}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0], add_help=False,
                                     allow_abbrev=False,  # --data (folder) is not --dataset
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dataset", choices=tuple(COMMANDS), help="the dataset (its options: --dataset D --help)")
    args, rest = parser.parse_known_args(argv if argv is not None else sys.argv[1:])
    if args.dataset is None:
        if {"-h", "--help"} & set(rest):
            parser.print_help()
            return 0
        parser.error("--dataset kitti|nyu|folder is required")
    return COMMANDS[args.dataset](rest)


if __name__ == "__main__":
    sys.exit(main())
