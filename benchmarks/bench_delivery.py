"""Frame delivery from a camera driver in another process into depth_node: how many frames the node receives.

    python benchmarks/bench_delivery.py [--rates 10,30] [--frames 50] [--size 1242x375]

The camera is a separate process publishing rgb8 (or jpeg) frames with camera_info, like a driver started outside
our launch file: STOCK Fast DDS settings (no profile variables), a reliable publisher (image_transport's default) or a
best-effort one (SensorDataQoS drivers), or with the shipped profile loaded (as the launch file starts processes).
The node runs as users run it (its entry point, default parameters, the shipped profile). Each row: frames the node
received (its frames_received counter) of those sent, and the node's own estimate (image_delivery: images whose
camera_info arrived, against those camera_info messages), against the same camera with the shipped profile as the
baseline in this run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

CAMERA = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from ros_harness import camera_info_msg, rgb_image_msg
    rate, frames, width, height, reliability, transport = (float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                                           int(sys.argv[4]), sys.argv[5], sys.argv[6])
    rclpy.init()
    node = rclpy.create_node("stock_camera", namespace="/delivery")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                     else ReliabilityPolicy.BEST_EFFORT)
    compressed = transport == "compressed"
    image_pub = node.create_publisher(CompressedImage if compressed else Image,
                                      "image/compressed" if compressed else "image", qos)
    info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
    deadline = time.time() + 120
    while image_pub.get_subscription_count() == 0 and time.time() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(2.0)  # both sides matched
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if compressed:
        import cv2
        jpeg = cv2.imencode(".jpg", rgb[..., ::-1])[1].tobytes()
    start = time.time()
    for i in range(frames):
        stamp = node.get_clock().now().to_msg()
        info_pub.publish(camera_info_msg(stamp, width, height))
        if compressed:
            msg = CompressedImage(format="jpeg", data=jpeg)
            msg.header.stamp = stamp
        else:
            msg = rgb_image_msg(rgb, stamp)
        image_pub.publish(msg)
        while time.time() < start + (i + 1) / rate:
            rclpy.spin_once(node, timeout_sec=0.001)
    time.sleep(2.0)  # retransmissions
    print("sent", frames, flush=True)
""")


def run_case(env_node, env_camera, checkpoint, rate, frames, size, reliability, transport, tmp, harness_cls,
             start_node):
    params = {"checkpoint": str(checkpoint), "device": "cpu", "backend": "eager", "input_transport": transport}
    node = start_node(env_node, "/delivery", params, tmp / "node.log")
    h = harness_cls("/delivery")
    try:
        h.subscribe_outputs(("depth",))
        h.spin_until(lambda: h.node.count_subscribers("/delivery/image" if transport == "raw"
                                                      else "/delivery/image/compressed") > 0, 300, "the node")
        before = int(h.fresh_status(lambda s: True, 60)["frames_received"])
        camera = subprocess.run([sys.executable, "-c", CAMERA, str(rate), str(frames), str(size[0]), str(size[1]),
                                 reliability, transport], env=env_camera, capture_output=True, text=True,
                                timeout=600, cwd=str(Path(__file__).resolve().parents[1] / "test"))
        if camera.returncode != 0:
            raise RuntimeError(camera.stderr[-2000:])
        deadline = time.time() + 5
        status = h.fresh_status(lambda s: True, 30)
        while time.time() < deadline:
            h.executor.spin_once(timeout_sec=0.05)
        status = h.status()
        return int(status["frames_received"]) - before, status.get("image_delivery", "n/a"), \
            status.get("image_reliability", "n/a")
    finally:
        h.destroy()
        node.terminate()
        node.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10,30")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--size", default="1242x375")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import rclpy

    from helpers import save_tiny_tower, tiny_model
    from ros_harness import Harness, ros_environment, start_node
    from space_clip_ros import save_checkpoint
    from space_clip_ros.ros import fastdds

    tmp = Path(tempfile.mkdtemp(prefix="space_clip_delivery_"))
    checkpoint = save_checkpoint(tiny_model(save_tiny_tower(tmp / "tower")), tmp / "tiny.pt",
                                 provenance={"trained": True, "source": "delivery benchmark"})
    base = ros_environment(tmp)  # domain, logs, localhost discovery; no profile variables in it yet
    node_env = {k: v for k, v in base.items() if k not in fastdds.PROFILE_VARIABLES}  # the node loads its own
    stock = dict(node_env)  # a driver started elsewhere: Fast DDS defaults
    profiled = {**node_env, **fastdds.profile_environment({})}
    os.environ.update(base)
    rclpy.init()
    rows = []
    try:
        cases = [("raw", "reliable", stock, "stock"), ("raw", "best_effort", stock, "stock"),
                 ("compressed", "reliable", stock, "stock"), ("raw", "best_effort", profiled, "shipped profile")]
        for rate in (float(r) for r in args.rates.split(",")):
            for transport, reliability, env, settings in cases:
                got, estimate, chosen = run_case(node_env, env, checkpoint, rate, args.frames, (width, height),
                                                 reliability, transport, tmp, Harness, start_node)
                rows.append((rate, transport, reliability, settings, got, estimate, chosen))
                print(f"{rate:g} Hz {transport} {reliability} ({settings}): {got}/{args.frames}", flush=True)
    finally:
        rclpy.try_shutdown()
    print(f"\nframe delivery into depth_node, {width}x{height}, {args.frames} frames per row, camera in another "
          f"process, {os.cpu_count()} CPU cores")
    print("| rate Hz | input | camera publisher | camera's Fast DDS | received by the node | node's estimate | "
          "node's image subscription |")
    print("|---|---|---|---|---|---|---|")
    for rate, transport, reliability, settings, got, estimate, chosen in rows:
        print(f"| {rate:g} | {transport} | {reliability} | {settings} | {got}/{args.frames} "
              f"({100 * got / args.frames:.0f}%) | {estimate} | {chosen} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
