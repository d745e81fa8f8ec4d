"""The datasets train/ knows, one entry each: the reader, the camera its checkpoints carry, the default config,
the trainer's command-line words and the crops of its standard protocol (its protocols: protocols.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from space_clip_ros.model.config import KITTI_CAMERA, NYU_CAMERA, TrainingCamera

from . import folder
from .kitti import KittiDepth
from .nyu import NyuDepth


@dataclass(frozen=True)
class Dataset:
    name: str
    #: (reader class, the camera checkpoints carry) for a data root; the folder dataset reads both from the folder.
    reader: Callable[[Optional[str]], Tuple[type, TrainingCamera]]
    config: str  # the default config, in train/configs/
    prog: str  # the trainer script
    data_path_help: str
    gt_path_help: str
    crops: Tuple[str, ...]  # of its standard protocol


DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset("kitti", lambda root: (KittiDepth, KITTI_CAMERA), "kitti_paper.yaml", "train_kitti.py",
            "KITTI raw root (date folders: 2011_09_26/...)", "annotated depth root (drives under train/ and val/)",
            ("garg", "eigen", "none")),
    Dataset("nyu", lambda root: (NyuDepth, NYU_CAMERA), "nyu_release.yaml", "train_nyu.py",
            "NYU Depth v2 root (sync/ for training, official_splits/test/ for evaluation)",
            "depth root when not beside the images (default: --data-path)", ("eigen", "none")),
    Dataset("folder", folder.dataset_for, "finetune.yaml", "finetune.py",
            "a training folder (space-clip-bag2dataset's: images/, depth/, train.txt, val.txt, camera.yaml)",
            "the same folder (default)", ("none",)),
)}
