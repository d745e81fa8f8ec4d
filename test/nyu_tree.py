"""A small NYU Depth v2 tree written by the tests, in the release's layout: sync/<scene>/rgb_XXXXX.jpg with
sync_depth_XXXXX.png (uint16 millimetres) for training, official_splits/test/<scene>/... for evaluation, and the two
lists in the release's format (the training list's paths start with '/'). Frames are 480x640, rendered from the
synthetic scene with NYU's camera and cut at 10 m."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from space_clip_ros.synthetic import render_scene

NYU_K = (518.8579, 519.4696, 325.5824, 253.7362)  # fx, fy, cx, cy of NYU's Kinect colour camera
SIZE = (480, 640)


@dataclass
class NyuTree:
    root: Path
    train_list: Path
    test_list: Path
    depth: Dict[str, np.ndarray] = field(default_factory=dict)  # list image path -> depth as written (metres)


def write_frame(folder: Path, index: int, forward: float) -> np.ndarray:
    rgb, depth = render_scene(SIZE, NYU_K, forward=forward, max_depth=10.0)
    depth = np.where((depth > 0) & (depth < 10.0), depth, 0).astype(np.float32)
    depth[::37, ::41] = 0  # Kinect holes
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"rgb_{index:05d}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95])
    mm = np.round(depth * 1000.0).astype(np.uint16)
    cv2.imwrite(str(folder / f"sync_depth_{index:05d}.png"), mm)
    return mm.astype(np.float32) / 1000.0


def write_nyu_tree(root: Path, train: int = 4, test: int = 3) -> NyuTree:
    lines: Dict[str, List[str]] = {"train": [], "test": []}
    tree = NyuTree(root, root / "nyu_train.txt", root / "nyu_test.txt")
    for split, count, scene, folder in (("train", train, "kitchen_0028b", root / "sync" / "kitchen_0028b"),
                                        ("test", test, "bathroom", root / "official_splits" / "test" / "bathroom")):
        for i in range(count):
            index = 45 + 7 * i
            depth = write_frame(folder, index, forward=1.5 * i + (0.0 if split == "train" else 0.7))
            lead = "/" if split == "train" else ""
            image = f"{lead}{scene}/rgb_{index:05d}.jpg"
            lines[split].append(f"{image} {lead}{scene}/sync_depth_{index:05d}.png 518.8579")
            tree.depth[image] = depth
    tree.train_list.write_text("\n".join(lines["train"]) + "\n")
    tree.test_list.write_text("\n".join(lines["test"]) + "\n")
    return tree
