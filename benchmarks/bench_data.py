"""Training data pipeline speed: KITTI-size frames decoded, augmented and prepared for the tower, per worker.

    python benchmarks/bench_data.py [--frames 8] [--items 60] [--gpu-img-s 600]

Writes a synthetic KITTI tree at full resolution (1242x375 PNG images and annotated depth, as train/ reads them)
and times, in this one process on one OpenCV thread (what one DataLoader worker does): the two PNG decodes alone (the
floor of any item), KittiDepth's training items (decode, random 352x704 crop, rotation, colour, flip, PIL bicubic
resize to 224x224, normalisation) with each rotation backend, and the evaluation items. Prints medians per item,
images/s per worker, and how many workers (a core each) feed a GPU that trains ``--gpu-img-s`` images/s: pass the
images/s bench_train.py measured on that GPU (600 when not given: about twice the authors' fp32 speed on an H100).
"""

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "train"), str(ROOT)]


def median_ms(fn, count: int) -> float:
    for _ in range(3):
        fn(0)
    times = []
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=8, help="frames in the synthetic tree")
    parser.add_argument("--items", type=int, default=60, help="items timed per row")
    parser.add_argument("--gpu-img-s", type=float, default=600.0,
                        help="images/s the GPU trains (bench_train.py's figure), for the workers column")
    args = parser.parse_args()

    import cv2
    from kitti_tree import write_tree
    from space_clip_train.data import Augment
    from space_clip_train.kitti import KittiDepth

    from space_clip_ros.model import CLIP_MEAN, CLIP_STD

    cv2.setNumThreads(1)  # as in a DataLoader worker (train/space_clip_train/data.py: loader)
    tree = write_tree(Path(tempfile.mkdtemp(prefix="space_clip_data_")), drives={1: args.frames, 2: args.frames},
                      test_drive=2, size=(375, 1242))
    rows = []
    for name, lst, mode, backend in (("train, rotate_backend pil (the authors' pixels)", tree.train_list, "train",
                                      "pil"),
                                     ("train, rotate_backend opencv", tree.train_list, "train", "opencv"),
                                     ("eval", tree.test_list, "eval", "pil")):
        data = KittiDepth(lst, tree.raw, tree.gt, mode, (224, 224), CLIP_MEAN, CLIP_STD,
                          Augment(rotate_backend=backend))
        if not rows:
            rows.append(("PNG decode alone (image + depth)",
                         median_ms(lambda i, d=data: d.load(i % len(d)), args.items)))
        key = (lambda i, d=data: (i // len(d), i % len(d))) if mode == "train" else (lambda i, d=data: i % len(d))
        rows.append((name, median_ms(lambda i, d=data, k=key: d[k(i)], args.items)))
    print(f"\ntrain/ data pipeline, 1242x375 KITTI-size PNGs (synthetic), one process on one OpenCV thread "
          f"(= one DataLoader worker), {os.cpu_count()} CPU cores here")
    print(f"| items | ms per item (median) | images/s per worker | workers for {args.gpu_img_s:.0f} img/s | "
          "against train pil |")
    print("|---|---|---|---|---|")
    for name, ms in rows:
        rate = 1000.0 / ms
        print(f"| {name} | {ms:.1f} | {rate:.1f} | {math.ceil(args.gpu_img_s / rate)} | {rows[1][1] / ms:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
