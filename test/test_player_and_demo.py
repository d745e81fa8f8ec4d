"""The player (KITTI calibration, plain folders, frame count) and the demo's early stop, over real DDS."""

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed: pip install -e '.[ros]'")

from helpers import tiny_model  # noqa: E402
from kitti_tree import write_kitti_drive  # noqa: E402
from ros_harness import ros_environment  # noqa: E402

from space_clip_ros.checkpoint import checkpoint_dict  # noqa: E402
from space_clip_ros.kitti_calib import read_kitti_calib  # noqa: E402
from space_clip_ros.ros.player import kitti_camera_info, list_frames  # noqa: E402

# Camera 02 of the 2011_09_26 drives, as published in KITTI's calib_cam_to_cam.txt (P_rect_02 has a baseline term).
REAL_CALIB = """calib_time: 09-Jan-2012 13:57:47
corner_dist: 9.950000e-02
S_rect_02: 1.242000e+03 3.750000e+02
R_rect_02: 9.998817e-01 1.511453e-02 -2.841595e-03 -1.511724e-02 9.998853e-01 -9.338510e-04 2.827154e-03 9.766976e-04 9.999955e-01
P_rect_02: 7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01 0.000000e+00 7.215377e+02 1.728540e+02 2.163791e-01 0.000000e+00 0.000000e+00 1.000000e+00 2.745884e-03
"""


def test_kitti_calibration_becomes_camera_info(tmp_path):
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text(REAL_CALIB)
    calib = read_kitti_calib(path)
    assert "calib_time" not in calib and calib["corner_dist"][0] == pytest.approx(0.0995)
    info = kitti_camera_info(path, frame_id="cam2")
    assert (info.width, info.height, info.header.frame_id) == (1242, 375, "cam2")
    assert list(info.k) == pytest.approx([721.5377, 0, 609.5593, 0, 721.5377, 172.854, 0, 0, 1])
    assert info.p[3] == pytest.approx(44.85728) and info.p[7] == pytest.approx(0.2163791)
    path.write_text("calib_time: x\nP_rect_00: 1 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(ValueError, match="P_rect_02.*not a KITTI calib_cam_to_cam"):
        kitti_camera_info(path)


def test_list_frames(tmp_path):
    write_kitti_drive(tmp_path, frames=2, size=(40, 120))
    drive = tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync"
    assert [p.name for p in list_frames(drive)] == ["0000000000.png", "0000000001.png"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        list_frames(tmp_path / "empty")


def _record(env, tmp_path, player_params, expect, timeout=60.0):
    """Run space-clip-player in its own process; record what it publishes until it exits on its own."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    node = rclpy.create_node("player_probe", namespace="/play")
    got = {"image": [], "info": []}
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "image", got["image"].append, qos)
    node.create_subscription(CameraInfo, "camera_info", got["info"].append, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    args = [sys.executable, "-m", "space_clip_ros.ros.player", "--ros-args", "-r", "__ns:=/play"]
    for key, value in player_params.items():
        args += ["-p", f"{key}:={value}"]
    log = tmp_path / "player.log"
    proc = subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and (proc.poll() is None or len(got["image"]) < expect):
            executor.spin_once(timeout_sec=0.05)
            if proc.poll() is not None and len(got["image"]) < expect:
                executor.spin_once(timeout_sec=0.5)
                break
        end = time.time() + 0.5  # anything extra would arrive now
        while time.time() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        node.destroy_node()
    return got, proc.returncode, log.read_text()


def test_player_publishes_a_kitti_drive_with_its_calibration(ros, tmp_path):
    write_kitti_drive(tmp_path, frames=2, size=(40, 120))
    (tmp_path / "2011_09_26" / "calib_cam_to_cam.txt").write_text(REAL_CALIB.replace(
        "1.242000e+03 3.750000e+02", "1.200000e+02 4.000000e+01"))
    drive = tmp_path / "2011_09_26" / "2011_09_26_drive_0001_sync"
    got, code, log = _record(ros, tmp_path, {"source": str(drive), "rate": 20.0, "count": 5, "frame_id": "cam2"}, 5)
    assert code == 0, log
    assert len(got["image"]) == 5 and len(got["info"]) == 5, log  # count wins over the 2 frames: it loops
    first = cv2.imread(str(list_frames(drive)[0]))[..., ::-1]
    third = got["image"][2]
    assert (third.encoding, third.width, third.height, third.header.frame_id) == ("rgb8", 120, 40, "cam2")
    assert np.array_equal(np.frombuffer(bytes(third.data), np.uint8).reshape(40, 120, 3), first)
    for image, info in zip(got["image"], got["info"], strict=False):
        assert image.header.stamp == info.header.stamp
    assert got["info"][0].k[0] == pytest.approx(721.5377) and (got["info"][0].width, got["info"][0].height) == (120, 40)


def test_player_plain_folder_with_intrinsics_plays_each_frame_once(ros, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.jpg"), np.full((30, 50, 3), 40 * i, np.uint8))
    params = {"source": str(folder), "rate": 20.0, "loop": False, "fx": 100.0, "fy": 101.0, "cx": 25.0, "cy": 15.0}
    got, code, log = _record(ros, tmp_path, params, 3)
    assert code == 0, log
    assert len(got["image"]) == 3, log
    assert list(got["info"][0].k) == pytest.approx([100, 0, 25, 0, 101, 15, 0, 0, 1])
    assert list(got["info"][0].p) == pytest.approx([100, 0, 25, 0, 0, 101, 15, 0, 0, 0, 1, 0])

    got, code, log = _record(ros, tmp_path, {"source": str(folder), "rate": 20.0, "loop": False}, 3)
    assert code == 0 and len(got["image"]) == 3 and got["info"] == []
    assert "no camera_info: set fx, fy, cx, cy" in log


def test_demo_stops_early_when_the_node_cannot_load_its_model(clip_tower, tmp_path):
    """A checkpoint that references a hub tower that is not on this machine: the demo reports why, quickly."""
    import torch

    ckpt = checkpoint_dict(tiny_model(clip_tower), embed_backbone=False)
    ckpt["model_config"]["backbone"] = ckpt["backbone"]["source"] = "example-org/clip-not-downloaded"
    torch.save(ckpt, tmp_path / "hub.pt")
    env = ros_environment(tmp_path)
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "space_clip_ros.ros.demo", "--checkpoint", str(tmp_path / "hub.pt"),
                             "--device", "cpu", "--out", str(tmp_path / "out"), "--timeout", "170"],
                            env=env, capture_output=True, text=True, timeout=200)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.time() - start < 90
    assert "depth_node could not start: configure failed" in result.stderr
    assert "example-org/clip-not-downloaded" in result.stderr
