"""space-clip-record: record topics (the node's outputs) to a rosbag2 recording, without a rosbag2 install.

    space-clip-record runs/depth_bag --topics /camera/depth/image /camera/depth/camera_info [--storage sqlite3]
    space-clip-record out_bag --topics /camera/depth/image --duration 30

Writes a new rosbag2 folder (mcap by default, or sqlite3) with the ``rosbags`` library: each message as it arrived
(its serialized bytes, untouched, so the header stamps are the node's), with the receive time as the bag time, as
``ros2 bag record`` does. Stops on Ctrl-C, after ``--duration`` seconds or ``--count`` messages of the first topic.
On a ROS 2 install, ``ros2 bag record`` does the same.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from .bags import RecordingError, RecordingWriter, topic_type


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-record", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", type=Path, help="the new recording's folder")
    parser.add_argument("--topics", nargs="+", required=True, help="absolute topic names")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages of the first topic")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for each topic to appear")
    args, ros_args = parser.parse_known_args(argv)

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from .fastdds import use_shipped_profile

    use_shipped_profile()
    rclpy.init(args=["space-clip-record", *ros_args])
    node = rclpy.create_node("space_clip_record")
    stop = {"now": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(now=True))
    counts: Dict[str, int] = {t: 0 for t in args.topics}
    try:
        types: Dict[str, str] = {}
        deadline = time.monotonic() + args.wait
        while len(types) < len(args.topics) and not stop["now"]:
            for topic in args.topics:
                found = topic_type(node, topic)
                if found:
                    types[topic] = found
            if time.monotonic() > deadline:
                missing = [t for t in args.topics if t not in types]
                raise RecordingError(f"no publisher of {', '.join(missing)} appeared within {args.wait:g} s")
            rclpy.spin_once(node, timeout_sec=0.1)
        writer = RecordingWriter(args.out, args.storage)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)

        def keep(topic: str):
            def callback(data: bytes) -> None:
                writer.write(topic, node.get_clock().now().nanoseconds, data)
                counts[topic] += 1
            return callback

        for topic, type_name in types.items():
            writer.add_topic(topic, type_name)
            package, _, name = type_name.split("/")
            msg_type = getattr(__import__(f"{package}.msg", fromlist=[name]), name)
            node.create_subscription(msg_type, topic, keep(topic), qos, raw=True)
        print(f"recording {', '.join(args.topics)} to {args.out} ({args.storage}); Ctrl-C stops", flush=True)
        start = time.monotonic()
        try:
            while not stop["now"] and rclpy.ok():
                rclpy.spin_once(node, timeout_sec=0.05)
                if args.duration and time.monotonic() - start >= args.duration:
                    break
                if args.count and counts[args.topics[0]] >= args.count:
                    break
        finally:
            writer.close()
        print("recorded " + ", ".join(f"{n} on {t}" for t, n in counts.items()) + f" to {args.out}", flush=True)
        return 0
    except RecordingError as error:
        print(f"space-clip-record: error: {error}", file=sys.stderr)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
