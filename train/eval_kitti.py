"""``python train/evaluate.py --dataset kitti ...``, under the name the docs and scripts have always used (see
train/evaluate.py and space_clip_train/evaluate_kitti.py for the options)."""

import sys
from typing import List, Optional

import evaluate
from space_clip_train.kitti import EIGEN_TEST  # noqa: F401  (the default test list, for scripts that read it here)


def main(argv: Optional[List[str]] = None) -> int:
    return evaluate.main(["--dataset", "kitti", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
