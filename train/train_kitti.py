"""Train SPACE-CLIP's decoder on KITTI (Eigen split) over a frozen CLIP tower; one process, one GPU, or many.

    python train/train_kitti.py --data-path RAW --gt-path ANNOTATED                       # the paper's recipe
    python train/train_kitti.py --config train/configs/kitti_release.yaml --data-path RAW --gt-path ANNOTATED
    torchrun --nproc_per_node=8 train/train_kitti.py --data-path RAW --gt-path ANNOTATED  # DistributedDataParallel

Writes to --out: config.yaml (the resolved configuration), last.pt after every epoch and best.pt (lowest AbsRel),
both space_clip_ros checkpoints the node and load_checkpoint read directly, written atomically; metrics.jsonl; and
TensorBoard logs in tb/. --resume RUN/last.pt continues exactly where that run stopped.
The library behind it is train/space_clip_train/ (trainer.py: the loop; cli.py: these options).
"""

import sys
from typing import List, Optional

from space_clip_train import cli


def main(argv: Optional[List[str]] = None) -> int:
    return cli.main(argv, dataset="kitti")


if __name__ == "__main__":
    sys.exit(main())
