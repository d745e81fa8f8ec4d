"""space-clip-demo: the depth node, fed by the player, over real ROS 2 on this machine; shows what comes out.

    space-clip-demo                                  # no checkpoint: the real pipeline on an UNTRAINED model
    space-clip-demo --checkpoint space_clip_kitti.pt # real depth

Starts ``depth_node`` in its own process under the namespace ``/space_clip_demo``, plays the KITTI-style frames
shipped with the package into it, records depth/image, depth/points, depth/colored and /diagnostics, prints rates and
latencies, and writes the coloured depth (PNG) and the cloud (PLY) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import fastdds

NAMESPACE = "/space_clip_demo"


def local_ros_environment(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for ROS processes that stay on this machine: localhost discovery, the localhost Fast DDS
    profile, a writable log folder and (if unset) a random domain id, keeping whatever the user set."""
    env = dict(os.environ if env is None else env)
    fastdds.use_shipped_profile(env, localhost=True)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(30, 99)))
    if "ROS_LOG_DIR" not in env:
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="space_clip_ros_log_")
    return env


def write_ply(path: Path, points: np.ndarray) -> int:
    """Binary little-endian PLY of the finite points of an (H, W, >=3) array; returns how many were written."""
    xyz = points.reshape(-1, points.shape[-1])[:, :3]
    xyz = xyz[np.isfinite(xyz).all(axis=1)].astype("<f4")
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\n"
              "property float x\nproperty float y\nproperty float z\nend_header\n")
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(xyz.tobytes())
    return len(xyz)


def node_command(checkpoint: Optional[str], device: str, extra: Sequence[str] = (),
                 backend: str = "auto") -> List[str]:
    params = ["-p", f"device:={device}", "-p", f"backend:={backend}"]
    params += ["-p", f"checkpoint:={checkpoint}"] if checkpoint else ["-p", "untrained_demo:=true"]
    return [sys.executable, "-m", "space_clip_ros.ros.depth_node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
            *params, *extra]


def run(args: argparse.Namespace) -> int:
    env = local_ros_environment()
    os.environ.update({k: env[k] for k in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE",
                                           "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR")})
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from .player import PlayerNode

    if not args.checkpoint:
        print("No trained checkpoint given (--checkpoint FILE for real depth). This demo runs the real pipeline on a "
              "small UNTRAINED model (random weights): the depth below is meaningless.")
    print(f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, namespace {NAMESPACE}, logs in {env['ROS_LOG_DIR']}")
    node_proc = subprocess.Popen(node_command(args.checkpoint, args.device, backend=args.backend), env=env)
    rclpy.init(args=["--ros-args", "-r", f"__ns:={NAMESPACE}"])
    received: Dict[str, list] = {"depth": [], "points": [], "colored": [], "diagnostics": []}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        player = PlayerNode(parameter_overrides=[
            rclpy.parameter.Parameter("rate", value=float(args.rate)),
            rclpy.parameter.Parameter("count", value=int(args.frames))])
        recorder = Node("demo_recorder")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

        def keep(key):
            def callback(msg):
                received[key].append((time.time(), msg))
            return callback

        recorder.create_subscription(Image, "depth/image", keep("depth"), qos)
        recorder.create_subscription(PointCloud2, "depth/points", keep("points"), qos)
        recorder.create_subscription(Image, "depth/colored", keep("colored"), qos)
        recorder.create_subscription(DiagnosticArray, "/diagnostics", keep("diagnostics"), 10)
        executor = SingleThreadedExecutor()
        executor.add_node(player)
        executor.add_node(recorder)
        deadline = time.time() + args.timeout
        while time.time() < deadline and len(received["depth"]) < args.frames:
            executor.spin_once(timeout_sec=0.1)
            if node_proc.poll() is not None:
                print(f"space-clip-demo: error: depth_node exited with code {node_proc.returncode}", file=sys.stderr)
                return 2
            failure = configure_failure(received["diagnostics"])
            if failure:
                print(f"space-clip-demo: error: depth_node could not start: {failure}", file=sys.stderr)
                return 2
        end = time.time() + 1.5  # one more diagnostics message after the last frame
        while time.time() < end:
            executor.spin_once(timeout_sec=0.1)
    finally:
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        rclpy.try_shutdown()
    return report(received, args)


def configure_failure(diagnostics: list) -> Optional[str]:
    """The node's error when its diagnostics say it failed to configure (it stays up, unconfigured, waiting for a
    lifecycle manager to retry), else None."""
    from diagnostic_msgs.msg import DiagnosticStatus

    for _, array in diagnostics[-3:]:
        for status in array.status:
            if (status.name.startswith(NAMESPACE) and status.level == DiagnosticStatus.ERROR
                    and status.message.startswith("configure failed")):
                return status.message
    return None


def report(received: Dict[str, list], args: argparse.Namespace) -> int:
    import cv2

    from ..node import decoding

    depth_msgs = received["depth"]
    if not depth_msgs:
        print("space-clip-demo: error: no depth image arrived (see the node's log above)", file=sys.stderr)
        return 2
    label = "" if args.checkpoint else "_untrained"
    latencies = [(t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) * 1000 for t, m in depth_msgs]
    span = depth_msgs[-1][0] - depth_msgs[0][0]
    depth = decoding.image_to_depth(depth_msgs[-1][1])
    print(f"\nreceived {len(depth_msgs)} depth images ({depth.shape[1]}x{depth.shape[0]} 32FC1), "
          f"{len(received['points'])} clouds, {len(received['colored'])} coloured images")
    if len(depth_msgs) > 1:
        print(f"output rate {(len(depth_msgs) - 1) / max(span, 1e-9):.2f} Hz; image stamp -> depth received "
              f"median {np.median(latencies):.0f} ms")
    finite = depth[np.isfinite(depth)]
    if finite.size:
        print(f"depth: {finite.size / depth.size:.0%} valid, median {np.median(finite):.2f} m, "
              f"range {finite.min():.2f}..{finite.max():.2f} m" + (" (UNTRAINED)" if label else ""))
    if received["colored"]:
        colour = decoding.image_to_rgb(received["colored"][-1][1])
        path = args.out / f"depth_colored{label}.png"
        cv2.imwrite(str(path), colour[..., ::-1])
        print(f"wrote {path}")
    if received["points"]:
        cloud = received["points"][-1][1]
        path = args.out / f"cloud{label}.ply"
        n = write_ply(path, decoding.cloud_to_array(cloud))
        print(f"wrote {path} ({n} points of an organized {cloud.width}x{cloud.height} cloud)")
    if received["diagnostics"]:
        for status in received["diagnostics"][-1][1].status:
            if status.name.startswith(NAMESPACE):
                values = {kv.key: kv.value for kv in status.values}
                print("diagnostics: " + ", ".join(f"{k}={values[k]}" for k in (
                    "state", "model", "device", "backend", "inference_ms_median", "latency_ms_median",
                    "points_latency_ms_median", "frames_dropped", "rejected_total") if k in values))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a trained space_clip_ros checkpoint; without it: UNTRAINED model")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--backend", default="auto",
                        help="auto | eager | compile | cudagraph | openvino | onnxruntime (default auto)")
    parser.add_argument("--frames", type=int, default=6, help="frames to play (default 6)")
    parser.add_argument("--rate", type=float, default=2.0, help="player rate in Hz (default 2)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
