"""Train SPACE-CLIP's decoder on NYU Depth v2 (indoor, 0-10 m) over a frozen CLIP tower; one process or many.

    python train/train_nyu.py --data-path NYU                       # the release's recipe (configs/nyu_release.yaml)
    python train/train_nyu.py --config train/configs/nyu_paper.yaml --data-path NYU
    torchrun --nproc_per_node=8 train/train_nyu.py --data-path NYU

NYU is the release's layout: NYU/sync/<scene>/rgb_*.jpg + sync_depth_*.png (mm) for training and
NYU/official_splits/test/<scene>/... for evaluation, listed by splits/nyudepthv2_*_files_with_gt.txt (shipped in
space_clip_train/).
Checkpoints carry NYU's camera (fx 518.8579 px at 640 px) for the node's focal-length transfer. Outputs and
--resume as train_kitti.py.
"""

import sys
from typing import List, Optional

from space_clip_train import cli


def main(argv: Optional[List[str]] = None) -> int:
    return cli.main(argv, dataset="nyu")


if __name__ == "__main__":
    sys.exit(main())
