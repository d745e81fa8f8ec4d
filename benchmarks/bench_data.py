"""Training data pipeline speed: KITTI-size frames decoded, augmented and prepared for the tower, per worker.

    python benchmarks/bench_data.py [--frames 8] [--items 60]

Writes a synthetic KITTI tree at full resolution (1242x375 PNG images and annotated depth, as train/ reads them)
and times KittiDepth's training items in this one process (one DataLoader worker does exactly this): PNG decode of
image and depth, random 352x704 crop, rotation, flip, colour jitter, PIL bicubic resize to 224x224, normalisation.
Also the evaluation items. Prints medians per item and items/s for one worker, and what N workers give when each has
a core of its own (the target: >= 600 images/s with 16 workers, i.e. >= 37.5 per worker).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "train"), str(ROOT)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames in the synthetic tree")
    parser.add_argument("--items", type=int, default=60, help="items timed per mode")
    args = parser.parse_args()

    from kitti_tree import write_tree
    from space_clip_train.data import Augment
    from space_clip_train.kitti import KittiDepth

    from space_clip_ros.model import CLIP_MEAN, CLIP_STD

    tree = write_tree(Path(tempfile.mkdtemp(prefix="space_clip_data_")), drives={1: args.frames, 2: args.frames},
                      test_drive=2, size=(375, 1242))
    rows = []
    for mode, lst, backend in (("train", tree.train_list, "pil"), ("train", tree.train_list, "opencv"),
                               ("eval", tree.test_list, "pil")):
        data = KittiDepth(lst, tree.raw, tree.gt, mode, (224, 224), CLIP_MEAN, CLIP_STD,
                          Augment(rotate_backend=backend))
        for i in range(min(3, len(data))):
            data[i]
        times = []
        for i in range(args.items):
            start = time.perf_counter()
            data[i % len(data)]
            times.append((time.perf_counter() - start) * 1000)
        ms = statistics.median(times)
        rows.append((mode if mode == "eval" else f"train, rotate_backend {backend}", ms, 1000.0 / ms))
    print(f"\ntrain/ data pipeline, 1242x375 KITTI-size PNGs, one process (= one DataLoader worker), "
          f"{os.cpu_count()} CPU cores here")
    print("| items | ms per item (median) | items/s per worker | with 16 workers | against train pil |")
    print("|---|---|---|---|---|")
    for mode, ms, rate in rows:
        print(f"| {mode} | {ms:.1f} | {rate:.1f} | {16 * rate:.0f} | {rows[0][1] / ms:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
