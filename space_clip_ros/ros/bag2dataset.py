"""space-clip-bag2dataset: a rosbag2 recording of a camera and a lidar (or an RGB-D camera) with tf becomes a
training set for train/ (``python train/finetune.py --data DIR``).

    space-clip-bag2dataset BAG --image-topic /camera/image_raw --camera-info-topic /camera/camera_info \\
        --depth-topic /lidar/points --out DIR [--accumulate 2 --fixed-frame odom]

Each image (``sensor_msgs/Image`` in any encoding the node takes, or ``CompressedImage``) is paired with the depth
message nearest in stamp within ``--max-dt``. The depth source is a ``PointCloud2`` (x/y/z fields, any point_step)
or a depth ``Image`` (16UC1 mm, 32FC1 m) with its own camera_info; its points are moved into the image's frame with
the recording's tf (``/tf_static``, ``/tf``; composed along the tree, dynamic transforms interpolated, at the depth
message's stamp) and projected with the image's camera_info (:func:`space_clip_ros.geometry.project_to_depth`:
``u = fx x / z + cx`` with K for a rectified image, K and the distortion for a raw one; pixel (round(u), round(v));
the nearest point wins).

Written, in train/'s formats: DIR/images/NNNNNN.png (rgb), DIR/depth/NNNNNN.png (uint16, metres x 256, 0 = no
measurement, the image's size), DIR/train.txt and DIR/val.txt (``image depth fx`` relative to DIR; val = whole blocks
of time, so near-duplicate neighbours do not leak), DIR/camera.yaml (size, K, D, R, P, frame) and DIR/summary.yaml
(frames written, skipped by reason, median depth density). Messages are read with ``rosbags`` (no ROS install).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import math
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import project_to_depth
from ..node.range_data import cloud_points, depth_image_points
from ..tf_tree import TfError, TfTree
from .bags import IMAGE_TYPES, BagReader, RecordingError

DEPTH_TYPES = ("sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/Image")
TF_TOPICS = ("/tf_static", "/tf")


@dataclass
class Options:
    image_topic: str
    camera_info_topic: str
    depth_topic: str
    depth_camera_info_topic: str = ""
    max_dt: float = 0.05
    every: int = 1
    min_depth: float = 0.1
    max_depth: float = 80.0
    accumulate: int = 0
    fixed_frame: str = ""
    val_fraction: float = 0.1
    val_block_s: float = 10.0
    ignore_distortion: bool = False


@dataclass
class Summary:
    written: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    densities: List[float] = field(default_factory=list)
    train: int = 0
    val: int = 0

    def as_dict(self) -> Dict[str, Any]:
        return {"frames_written": self.written, "train": self.train, "val": self.val,
                "skipped": dict(sorted(self.skipped.items())),
                "median_depth_density": float(np.median(self.densities)) if self.densities else 0.0}


# ---------------------------------------------------------------------------- messages
def header_stamp_ns(raw: bytes) -> int:
    """The header stamp of a serialized message whose first field is a std_msgs/Header (CDR: 4 bytes of
    encapsulation, then sec int32, nanosec uint32), without deserializing the rest."""
    if len(raw) < 12:
        raise RecordingError(f"a message of {len(raw)} bytes is too short to hold a header")
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def png_options(row_filter: str) -> List[int]:
    """Fast PNG writing: zlib level 1 and one row filter instead of OpenCV's default of trying all five per row
    (3x faster at the same size: ``UP`` for camera frames, ``NONE`` for sparse depth); OpenCV without the filter
    option (before 4.10) gets level 1 alone."""
    import cv2

    options = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):
        options += [cv2.IMWRITE_PNG_FILTER, getattr(cv2, f"IMWRITE_PNG_FILTER_{row_filter}")]
    return options


def camera_yaml(info: Any, frame_id: str) -> Dict[str, Any]:
    """camera_info as camera_calibration's YAML (what camera_info_manager reads), with the frame."""
    def matrix(values, rows, cols):
        return {"rows": rows, "cols": cols, "data": [float(v) for v in values]}

    return {"image_width": int(info.width), "image_height": int(info.height), "camera_name": frame_id or "camera",
            "frame_id": frame_id, "camera_matrix": matrix(info.k, 3, 3),
            "distortion_model": str(info.distortion_model) or "plumb_bob",
            "distortion_coefficients": matrix(info.d, 1, len(info.d)), "rectification_matrix": matrix(info.r, 3, 3),
            "projection_matrix": matrix(info.p, 3, 4)}


def read_tf(bag: BagReader, tree: TfTree) -> int:
    """Every transform of /tf_static and /tf into ``tree``; how many."""
    topics = [t for t in TF_TOPICS if t in bag.topics]
    return sum(tree.add_transforms(bag.decode(raw, bag.topics[topic]).transforms, topic == "/tf_static")
               for topic, _, raw in bag.messages(topics))


# ---------------------------------------------------------------------------- conversion
def _pairs(image_stamps: List[int], depth_stamps: List[int], opts: Options) -> Dict[int, Optional[int]]:
    """Image index -> the nearest depth message (index) within max_dt, or None; every ``every``-th image."""
    order = sorted(range(len(depth_stamps)), key=depth_stamps.__getitem__)
    sorted_stamps = [depth_stamps[i] for i in order]
    limit = opts.max_dt * 1e9
    out = {}
    for i in range(0, len(image_stamps), opts.every):
        t = image_stamps[i]
        j = bisect.bisect_left(sorted_stamps, t)
        best = min((c for c in (j - 1, j) if 0 <= c < len(sorted_stamps)), key=lambda c: abs(sorted_stamps[c] - t),
                   default=None)
        out[i] = order[best] if best is not None and abs(sorted_stamps[best] - t) <= limit else None
    return out


def _val_flags(stamps: List[int], opts: Options) -> List[bool]:
    """Whole blocks of ``val_block_s`` seconds go to validation: every n-th block, n = round(1 / val_fraction);
    a recording shorter than n blocks gives its last val_fraction of frames."""
    if opts.val_fraction <= 0 or not stamps:
        return [False] * len(stamps)
    n = max(2, round(1 / opts.val_fraction))
    start = min(stamps)
    blocks = [int((t - start) / (opts.val_block_s * 1e9)) for t in stamps]
    flags = [b % n == n - 1 for b in blocks]
    if not any(flags):
        cut = sorted(stamps)[-max(1, math.ceil(opts.val_fraction * len(stamps)))]
        flags = [t >= cut for t in stamps]
    return flags


def convert(bag_path: Path, out: Path, opts: Options, log=print) -> Summary:
    """Convert a recording (see the module's docstring); raises :class:`RecordingError`."""
    import cv2
    import yaml

    from ..node import decoding  # the node's image decoders: every encoding it takes

    bag = BagReader(bag_path)
    image_type = bag.require(opts.image_topic, IMAGE_TYPES, "--image-topic")
    bag.require(opts.camera_info_topic, ("sensor_msgs/msg/CameraInfo",), "--camera-info-topic")
    depth_type = bag.require(opts.depth_topic, DEPTH_TYPES, "--depth-topic")
    depth_info_topic = ""
    if depth_type == "sensor_msgs/msg/Image":
        depth_info_topic = opts.depth_camera_info_topic or opts.depth_topic.rsplit("/", 1)[0] + "/camera_info"
        bag.require(depth_info_topic, ("sensor_msgs/msg/CameraInfo",), "the depth image's camera_info "
                    "(--depth-camera-info-topic)")
    if opts.accumulate and not opts.fixed_frame:
        raise RecordingError("--accumulate needs --fixed-frame (e.g. odom): scans are merged through a frame fixed in "
                             "the world")
    if out.exists() and any(out.iterdir()):
        raise RecordingError(f"{out} exists and is not empty: give a new folder")
    tree = TfTree()
    read_tf(bag, tree)
    # Pass 1: stamps and the camera models (small), to plan which depth messages each image needs.
    image_stamps, depth_stamps, info, depth_info = [], [], None, None
    for topic, _, raw in bag.messages([opts.image_topic, opts.depth_topic, opts.camera_info_topic, depth_info_topic]):
        if topic == opts.image_topic:
            image_stamps.append(header_stamp_ns(raw))
        elif topic == opts.depth_topic:
            depth_stamps.append(header_stamp_ns(raw))
        elif topic == opts.camera_info_topic and info is None:
            info = bag.decode(raw, "sensor_msgs/msg/CameraInfo")
        elif topic == depth_info_topic and depth_info is None:
            depth_info = bag.decode(raw, "sensor_msgs/msg/CameraInfo")
    if info is None or not info.k[0] > 0:
        raise RecordingError(f"{opts.camera_info_topic} has no usable camera_info (fx = 0: an uncalibrated camera?)")
    pairs = _pairs(image_stamps, depth_stamps, opts)
    summary = Summary()
    summary.skipped["no_depth_within_max_dt"] = sum(1 for j in pairs.values() if j is None)
    wanted: Dict[int, List[int]] = {}  # image index -> depth indices merged for it (N on each side in time)
    in_time = sorted(range(len(depth_stamps)), key=depth_stamps.__getitem__)
    position = {d: n for n, d in enumerate(in_time)}
    for i, j in pairs.items():
        if j is not None:
            n = position[j]
            wanted[i] = sorted(in_time[max(0, n - opts.accumulate): n + opts.accumulate + 1])
    last_use = {}
    for i, depths in wanted.items():
        for d in depths:
            last_use[d] = max(last_use.get(d, -1), i)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    size = (int(info.height), int(info.width))
    k = np.asarray(info.k).reshape(3, 3)
    d = np.zeros(0) if opts.ignore_distortion else np.asarray(info.d)
    fx = float(k[0, 0])
    lines: List[Tuple[int, str]] = []
    cache: Dict[int, Tuple[str, np.ndarray]] = {}  # depth index -> (frame, points)
    pending: collections.deque = collections.deque()  # (image index, raw) waiting for their depth
    image_frame = ""
    counters = {"image": 0, "depth": 0}
    start = time.perf_counter()

    failed: Dict[int, str] = {}  # depth index -> why it could not be read

    def ready(i):
        return all(d in cache or d in failed for d in wanted[i])

    def finish(i, raw):
        nonlocal image_frame
        msg = bag.decode(raw, image_type)
        image_frame = image_frame or msg.header.frame_id
        try:
            rgb = decoding.any_image_to_rgb(msg)
        except ValueError as error:
            summary.skipped[f"undecodable_image ({getattr(error, 'reason', 'error')})"] += 1
            return
        if rgb.shape[:2] != size:
            summary.skipped["image_size_differs_from_camera_info"] += 1
            return
        clouds = []
        for j in wanted[i]:
            if j in failed:
                continue
            frame, points = cache[j]
            try:
                to_camera = tree.lookup_full(msg.header.frame_id, image_stamps[i], frame, depth_stamps[j],
                                             opts.fixed_frame)
            except TfError as error:
                summary.skipped["no_tf"] += 1
                if summary.skipped["no_tf"] <= 3:  # the first few say why; the summary counts them all
                    log(f"  image {i}: no tf: {error}")
                return
            clouds.append(points @ to_camera[:3, :3].T + to_camera[:3, 3])
        if not clouds:
            summary.skipped[f"undecodable_depth ({failed[wanted[i][0]]})"] += 1
            return
        depth = project_to_depth(np.concatenate(clouds), size, k, d, str(info.distortion_model), opts.min_depth,
                                 opts.max_depth, np.float64)  # quantised from float64: as exact as the devkit
        density = float((depth > 0).mean())
        if density == 0:
            summary.skipped["no_depth_in_view"] += 1
            return
        name = f"{summary.written:06d}.png"
        cv2.imwrite(str(out / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), png_options("UP"))
        cv2.imwrite(str(out / "depth" / name), np.minimum(np.round(depth * 256.0), 65535).astype(np.uint16),
                    png_options("NONE"))
        lines.append((i, f"images/{name} depth/{name} {fx:.4f}"))
        summary.written += 1
        summary.densities.append(density)

    def drain(force=False):
        while pending and (force or ready(pending[0][0])):
            i, raw = pending.popleft()
            finish(i, raw)
            for j in wanted[i]:
                if last_use.get(j) == i:
                    cache.pop(j, None)

    # Pass 2: images wait in order until the depth messages they need have come; depth is kept until last used.
    for topic, _, raw in bag.messages([opts.image_topic, opts.depth_topic]):
        if topic == opts.image_topic:
            i = counters["image"]
            counters["image"] += 1
            if i in wanted:
                pending.append((i, raw))
        else:
            j = counters["depth"]
            counters["depth"] += 1
            if j in last_use:
                msg = bag.decode(raw, depth_type)
                try:
                    points = (cloud_points(msg) if depth_type.endswith("PointCloud2")
                              else depth_image_points(msg, depth_info))
                    cache[j] = (msg.header.frame_id, points)
                except ValueError as error:
                    failed[j] = str(error).split(":")[0][:60]
        drain()
    drain(force=True)
    flags = _val_flags([image_stamps[i] for i, _ in lines], opts)
    train = [line for (_, line), val in zip(lines, flags, strict=True) if not val]
    val = [line for (_, line), val in zip(lines, flags, strict=True) if val]
    (out / "train.txt").write_text("".join(f"{line}\n" for line in train))
    (out / "val.txt").write_text("".join(f"{line}\n" for line in val))
    summary.train, summary.val = len(train), len(val)
    (out / "camera.yaml").write_text(yaml.safe_dump(camera_yaml(info, image_frame), sort_keys=False))
    result = summary.as_dict()
    result["seconds"] = round(time.perf_counter() - start, 2)
    (out / "summary.yaml").write_text(yaml.safe_dump(result, sort_keys=False))
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-bag2dataset", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="rosbag2 recording: a folder, or one .mcap / .db3 file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    parser.add_argument("--camera-info-topic", required=True, help="the image's sensor_msgs/CameraInfo")
    parser.add_argument("--depth-topic", required=True, help="PointCloud2 (lidar) or a depth Image (RGB-D)")
    parser.add_argument("--depth-camera-info-topic", default="",
                        help="a depth Image's own camera_info (default: camera_info beside the depth topic)")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the training set")
    parser.add_argument("--max-dt", type=float, default=0.05, help="largest image-depth stamp difference, s")
    parser.add_argument("--every", type=int, default=1, help="use every Nth image")
    parser.add_argument("--min-depth", type=float, default=0.1, help="metres")
    parser.add_argument("--max-depth", type=float, default=80.0, help="metres")
    parser.add_argument("--accumulate", type=int, default=0, help="merge N scans on each side (needs --fixed-frame)")
    parser.add_argument("--fixed-frame", default="", help="frame fixed in the world for --accumulate, e.g. odom")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of time blocks for val.txt")
    parser.add_argument("--val-block-s", type=float, default=10.0, help="length of a validation block, s")
    parser.add_argument("--ignore-distortion", action="store_true",
                        help="the images are rectified whatever the camera_info's D says (e.g. KITTI's synced frames "
                             "converted with their raw calibration): project with K alone")
    args = parser.parse_args(argv)
    if args.every < 1 or args.accumulate < 0 or not 0 <= args.val_fraction < 1 or args.max_dt < 0:
        parser.error("need --every >= 1, --accumulate >= 0, 0 <= --val-fraction < 1, --max-dt >= 0")
    opts = Options(args.image_topic, args.camera_info_topic, args.depth_topic, args.depth_camera_info_topic,
                   args.max_dt, args.every, args.min_depth, args.max_depth, args.accumulate, args.fixed_frame,
                   args.val_fraction, args.val_block_s, args.ignore_distortion)
    try:
        summary = convert(args.bag, args.out, opts)
    except RecordingError as error:
        print(f"space-clip-bag2dataset: error: {error}", file=sys.stderr)
        return 1
    result = summary.as_dict()
    print(f"{args.out}: {result['frames_written']} frames written ({result['train']} train, {result['val']} val), "
          f"median depth density {result['median_depth_density']:.4f}")
    for reason, n in result["skipped"].items():
        if n:
            print(f"  skipped {n}: {reason}")
    if not summary.written:
        print("space-clip-bag2dataset: error: no frame could be written (see the reasons above)", file=sys.stderr)
        return 1
    print(f"fine-tune: python train/finetune.py --data {args.out} --init CHECKPOINT.pt --out runs/finetune")
    return 0


if __name__ == "__main__":
    sys.exit(main())
