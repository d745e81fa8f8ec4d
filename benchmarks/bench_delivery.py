"""Frame delivery from a camera driver in another process into depth_node: how many frames the node receives.

    python benchmarks/bench_delivery.py [--rates 10,30] [--frames 50] [--size 1242x375]

The camera is a separate process publishing rgb8 (or jpeg) frames with camera_info, like a driver started outside
our launch file: STOCK Fast DDS settings (no profile variables), a reliable publisher (image_transport's default) or a
best-effort one (SensorDataQoS drivers), or with the shipped profile loaded (as the launch file starts processes).
The node runs as users run it (its entry point, default parameters, the shipped profile). Each row: frames the node
received (its frames_received counter) of those sent, the node's own estimate (image_delivery: the share of camera_info
messages whose image arrived) and the reliability its image subscription had while frames arrived; the node's old
default (image_reliability best_effort) is the baseline row of each rate.
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

TEST_DIR = Path(__file__).resolve().parents[1] / "test"
sys.path.insert(0, str(TEST_DIR))

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


class Diagnostics:
    """The node's diagnostics, read by a participant that publishes nothing (so no other publisher is on the image
    topic); remembers the image subscription's reliability while frames were arriving."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        self.node = rclpy.create_node("delivery_probe")
        self.values = {}
        self.while_receiving = set()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._keep, 50)

    def _keep(self, array):
        for status in array.status:
            if status.name.startswith("/delivery/depth_node"):
                values = {kv.key: kv.value for kv in status.values}
                if self.values and values.get("frames_received") != self.values.get("frames_received"):
                    self.while_receiving.add(values.get("image_reliability"))
                self.values = values

    def spin(self, seconds, until=None):
        import rclpy

        deadline = time.time() + seconds
        while time.time() < deadline and not (until and until()):
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def destroy(self):
        self.node.destroy_node()


def run_case(env_node, env_camera, checkpoint, rate, frames, size, reliability, transport, tmp, start_node,
             node_params):
    params = {"checkpoint": str(checkpoint), "device": "cpu", "backend": "eager", "input_transport": transport,
              "diagnostics_period": 0.5, **node_params}
    node = start_node(env_node, "/delivery", params, tmp / "node.log")
    probe = Diagnostics()
    try:
        probe.spin(300, until=lambda: probe.values.get("state") == "active")
        before = int(probe.values["frames_received"])
        camera = subprocess.Popen([sys.executable, "-c", CAMERA, str(rate), str(frames), str(size[0]), str(size[1]),
                                   reliability, transport], env=env_camera, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=str(TEST_DIR))
        while camera.poll() is None:
            probe.spin(0.2)
        if camera.returncode != 0:
            raise RuntimeError(camera.stderr.read()[-2000:])
        probe.spin(2.0)
        values = probe.values
        chosen = "/".join(sorted(r for r in probe.while_receiving if r)) or values.get("image_reliability", "n/a")
        return int(values["frames_received"]) - before, values.get("image_delivery", "n/a"), chosen
    finally:
        probe.destroy()
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
    from ros_harness import ros_environment, start_node

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
        auto, old = {}, {"image_reliability": "best_effort"}
        cases = [("raw", "reliable", stock, "stock", old, "best_effort (before)"),
                 ("raw", "reliable", stock, "stock", auto, "auto"),
                 ("raw", "best_effort", stock, "stock", auto, "auto"),
                 ("compressed", "reliable", stock, "stock", auto, "auto"),
                 ("raw", "best_effort", profiled, "shipped profile", auto, "auto")]
        for rate in (float(r) for r in args.rates.split(",")):
            for transport, reliability, env, settings, node_params, label in cases:
                got, estimate, chosen = run_case(node_env, env, checkpoint, rate, args.frames, (width, height),
                                                 reliability, transport, tmp, start_node, node_params)
                rows.append((rate, transport, reliability, settings, label, got, estimate, chosen))
                print(f"{rate:g} Hz {transport} {reliability} ({settings}), node {label}: {got}/{args.frames}",
                      flush=True)
    finally:
        rclpy.try_shutdown()
    print(f"\nframe delivery into depth_node, {width}x{height}, {args.frames} frames per row, camera in another "
          f"process, {os.cpu_count()} CPU cores")
    print("| rate Hz | input | camera publisher | camera's Fast DDS | node's image_reliability | received by the "
          "node | node's estimate | node's subscription while receiving |")
    print("|---|---|---|---|---|---|---|---|")
    for rate, transport, reliability, settings, label, got, estimate, chosen in rows:
        print(f"| {rate:g} | {transport} | {reliability} | {settings} | {label} | {got}/{args.frames} "
              f"({100 * got / args.frames:.0f}%) | {estimate} | {chosen} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
