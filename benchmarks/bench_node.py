"""End-to-end latency and throughput of depth_node against the bare model, in one run.

    python benchmarks/bench_node.py [--frames 12] [--device cpu]

Uses a full-size model (ViT-B/16 tower, released decoder) with RANDOM weights: timing only, since a forward pass
costs the same whatever the weights. Prints medians for a 1242x375 rgb8 frame:
  bare      DepthEstimator.predict (preprocess + encoder + decoder + resize), in this process
  node      image stamp -> depth/image received, and -> depth/points received, over DDS, camera slower than the model
  saturate  output rate when the camera publishes as fast as it can (latest-frame-only dropping)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from space_clip_ros import DepthEstimator, save_checkpoint
    from space_clip_ros.model import SpaceClip, SpaceClipConfig
    from space_clip_ros.synthetic import KITTI_K, render_scene

    tmp = Path(tempfile.mkdtemp(prefix="space_clip_bench_"))
    torch.manual_seed(0)
    model = SpaceClip(SpaceClipConfig(), CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224)))
    torch.nn.init.constant_(model.decoder.depth_prediction_head[3].bias, 10.0)
    ckpt = save_checkpoint(model, tmp / "full_random.pt", embed_backbone=True,
                           provenance={"trained": True, "source": "benchmark: random weights, timing only"})
    rgb, _ = render_scene()
    estimator = DepthEstimator(model, device=args.device)
    for _ in range(3):
        estimator(rgb, fx=KITTI_K[0])
    bare = []
    for _ in range(args.frames):
        start = time.perf_counter()
        estimator(rgb, fx=KITTI_K[0])
        bare.append((time.perf_counter() - start) * 1000)
    bare_ms = statistics.median(bare)

    import rclpy

    from ros_harness import Harness, camera_info_msg, rgb_image_msg, ros_environment, start_node

    env = ros_environment(tmp)
    os.environ.update(env)
    rclpy.init()
    proc = start_node(env, "/bench", {"checkpoint": str(ckpt), "device": args.device}, tmp / "node.log")
    h = Harness("/bench")
    try:
        h.subscribe_outputs(("depth", "points"))
        h.wait_for_node(timeout=180)
        fx, fy, cx, cy = KITTI_K

        def send(i):
            stamp = h.stamp(i)
            h.info_pub.publish(camera_info_msg(stamp, 1242, 375, fx, fy, cx, cy))
            h.image_pub.publish(rgb_image_msg(rgb, stamp))
            return stamp

        def arrival(key, stamp):
            h.spin_until(lambda: any(m.header.stamp == stamp for m in h.received[key]), 120, key)
            return next(t for t, m in zip(h.arrival[key], h.received[key]) if m.header.stamp == stamp)

        for i in range(3):  # warm-up
            arrival("points", send(i))
        depth_lat, points_lat = [], []
        for i in range(10, 10 + args.frames):
            sent = time.time()
            stamp = send(i)  # synthetic stamps: latency is measured from the moment of publishing
            depth_lat.append((arrival("depth", stamp) - sent) * 1000)
            points_lat.append((arrival("points", stamp) - sent) * 1000)
            time.sleep(bare_ms / 1000 * 0.5)
        # Saturation: publish as fast as possible for a few seconds.
        first = len(h.received["depth"])
        start = time.time()
        i = 1000
        while time.time() - start < max(5.0, 8 * bare_ms / 1000):
            send(i)
            i += 1
            h.executor.spin_once(timeout_sec=0.01)
        h.spin_until(lambda: any(m.header.stamp == h.stamp(i - 1) for m in h.received["depth"]), 120, "last")
        outputs = len(h.received["depth"]) - first
        out_rate = outputs / (time.time() - start)
        in_rate = (i - 1000) / (time.time() - start)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        h.destroy()
        rclpy.try_shutdown()

    dm, pm = statistics.median(depth_lat), statistics.median(points_lat)
    print(f"\nspace_clip_ros node benchmark: 1242x375 rgb8, ViT-B/16 + released decoder (random weights), "
          f"device {args.device}, torch {torch.__version__}, {os.cpu_count()} CPU cores, {args.frames} frames")
    print(f"{'measure':<44} {'median ms':>10} {'ratio to bare':>14}")
    print(f"{'bare DepthEstimator.predict (in process)':<44} {bare_ms:10.1f} {1.0:14.2f}")
    print(f"{'node: publish -> depth/image received':<44} {dm:10.1f} {dm / bare_ms:14.2f}")
    print(f"{'node: publish -> depth/points received':<44} {pm:10.1f} {pm / bare_ms:14.2f}")
    print(f"saturated camera: {in_rate:.1f} Hz in, {out_rate:.2f} Hz out (bare model {1000 / bare_ms:.2f} Hz)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
