"""``python train/evaluate.py --dataset nyu ...``, under the name the docs and scripts have always used (see
train/evaluate.py and space_clip_train/evaluate_nyu.py for the options)."""

import sys
from typing import List, Optional

import evaluate


def main(argv: Optional[List[str]] = None) -> int:
    return evaluate.main(["--dataset", "nyu", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
