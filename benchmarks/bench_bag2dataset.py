"""space-clip-bag2dataset throughput on one CPU core: a recording of a 1242x375 rgb8 camera and a 120k-point lidar
(x, y, z, intensity, ring; 32-byte points) with static tf, converted to a training set.

    python benchmarks/bench_bag2dataset.py [--frames 40] [--points 120000]

Prints one table: the conversion's frames per second against a baseline run in the same process, reading every
message of the recording and deserializing it (what any conversion must pay). Pinned to one core (taskset's
affinity of this process, OpenCV and numpy's BLAS single-threaded). Target: >= 20 frames/s.
"""

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "test")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    import robot_bag as rb

    from space_clip_ros.ros.bag2dataset import Options, convert
    from space_clip_ros.ros.bags import BagReader
    from space_clip_ros.synthetic import KITTI_K, render_scene

    tmp = Path(tempfile.mkdtemp(prefix="space_clip_bag2dataset_"))
    fx, fy, cx, cy = KITTI_K
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    lidar_from_optical = np.array([[0, 0, 1, 0.27], [-1, 0, 0, 0.0], [0, -1, 0, -0.08], [0, 0, 0, 1.0]])
    messages = [("/tf_static", 0, rb.tf_message([rb.transform(0, "velo_link", "camera_optical",
                                                                lidar_from_optical)]))]
    rng = np.random.default_rng(0)
    for i in range(args.frames):
        t = (i + 1) * 100_000_000
        rgb, _ = render_scene(forward=0.5 * i)
        azimuth = rng.uniform(-np.pi, np.pi, args.points)
        elevation = rng.uniform(-0.43, 0.03, args.points)
        distance = rng.uniform(2.0, 80.0, args.points)
        points = np.stack([distance * np.cos(elevation) * np.cos(azimuth), distance * np.cos(elevation)
                           * np.sin(azimuth), distance * np.sin(elevation)], axis=1)
        messages += [("/camera/camera_info", t, rb.camera_info(t, "camera_optical", rgb.shape[:2], k)),
                     ("/camera/image_raw", t, rb.image(t, "camera_optical", rgb)),
                     ("/velodyne_points", t + 5_000_000, rb.cloud(t + 5_000_000, "velo_link", points))]
    bag = rb.write_bag(tmp / "bag", messages)

    def read_all():
        reader = BagReader(bag)
        for topic, _, raw in reader.messages(list(reader.topics)):
            reader.decode(raw, reader.topics[topic])

    runs = itertools.count()

    def run_convert():
        summary = convert(bag, tmp / f"out{next(runs)}", Options("/camera/image_raw", "/camera/camera_info",
                                                            "/velodyne_points", val_fraction=0.0), log=lambda s: None)
        assert summary.written == args.frames, summary

    rows = {}
    for name, run in (("read + deserialize every message (baseline)", read_all), ("bag2dataset", run_convert)):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        rows[name] = statistics.median(times)
    base = rows["read + deserialize every message (baseline)"]
    print(f"\nbag2dataset, {args.frames} frames of 1242x375 rgb8 + {args.points:,}-point clouds, one core "
          f"({os.uname().machine}), median of {args.repeats}")
    print("| step | s | frames/s | x baseline time |")
    print("|---|---|---|---|")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.2f} | {args.frames / seconds:.1f} | {seconds / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
