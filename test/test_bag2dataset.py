"""space-clip-bag2dataset on recordings the tests write: the shipped KITTI frames with KITTI's calibration and a lidar
through a tf chain (the depth must equal the devkit projection velo -> rect -> P2 exactly, after quantisation),
a moving robot with scans merged through odom, an RGB-D camera in another frame, pairing and skip reasons, the
validation split, and every broken input a user can hand it."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags", reason="rosbags not installed: pip install -e '.[bags]'")
pytest.importorskip("sensor_msgs", reason="the node's image decoders need sensor_msgs: pip install -e '.[ros]'")

import robot_bag as rb  # noqa: E402

from space_clip_ros.kitti_calib import read_kitti_calib  # noqa: E402
from space_clip_ros.ros.bag2dataset import Options, convert, main  # noqa: E402
from space_clip_ros.synthetic import KITTI_K, KITTI_SIZE, render_scene  # noqa: E402
from space_clip_ros.tf_tree import TfTree  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "space_clip_ros" / "data" / "kitti_sample" / "2011_09_26"
# KITTI's published Velodyne -> cam0 calibration of 2011_09_26 (calib_velo_to_cam.txt).
VELO_R = np.array([7.533745e-03, -9.999714e-01, -6.166020e-04, 1.480249e-02, 7.280733e-04, -9.998902e-01,
                   9.998621e-01, 7.523790e-03, 1.480755e-02]).reshape(3, 3)
VELO_T = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])
OPTICAL = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])  # camera_link -> optical axes
S = 1_000_000_000


def _rigid(r, t):
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = r, t
    return out


def _rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def kitti_calibration():
    """(P2 3x4, rect_from_velo 4x4, (H, W)) from the shipped calib_cam_to_cam.txt and KITTI's velo calibration; the
    rotations made exactly orthonormal (tf carries quaternions)."""
    cam = read_kitti_calib(SAMPLE / "calib_cam_to_cam.txt")
    p2 = cam["P_rect_02"].reshape(3, 4)
    rect = _rigid(rb.orthonormal(cam["R_rect_00"].reshape(3, 3)), np.zeros(3))
    width, height = (int(v) for v in cam["S_rect_02"])
    return p2, rect @ _rigid(rb.orthonormal(VELO_R), VELO_T), (height, width)


def kitti_bag(path: Path, points: np.ndarray, frames=3, d=(0.0, 0.0, 0.0, 0.0, 0.0)):
    """The shipped KITTI frames (image_02) as a robot's recording: the image's frame is camera 2's own optical
    frame (KITTI's rectified frame moved by P_rect_02's translation, K^-1 P_rect_02[:, 3]), camera_info K =
    P_rect_02[:, :3] and P = P_rect_02, the lidar in velo_link, tf base_link -> velo_link and base_link ->
    camera_link -> camera_color_left (static)."""
    p2, rect_from_velo, size = kitti_calibration()
    cam2_from_velo = _rigid(np.eye(3), np.linalg.solve(p2[:, :3], p2[:, 3])) @ rect_from_velo
    base_from_velo = _rigid(_rot_z(0.3), [0.8, -0.1, 1.73])
    camera_link_from_optical = np.linalg.inv(OPTICAL)  # optical axes expressed in camera_link
    # base <- camera_link chosen so that optical <- velo is camera 2's <- velo.
    base_from_camera_link = base_from_velo @ np.linalg.inv(cam2_from_velo) @ np.linalg.inv(camera_link_from_optical)
    static = rb.tf_message([rb.transform(0, "base_link", "velo_link", base_from_velo),
                            rb.transform(0, "base_link", "camera_link", base_from_camera_link),
                            rb.transform(0, "camera_link", "camera_color_left", camera_link_from_optical)])
    messages = [("/tf_static", 0, static)]
    for i in range(frames):
        t = (10 + i) * S // 10
        rgb = cv2.imread(str(SAMPLE / "2011_09_26_drive_0001_sync" / "image_02" / "data" / f"{i:010d}.png"))[..., ::-1]
        messages += [("/kitti/camera_color_left/camera_info", t, rb.camera_info(t, "camera_color_left", size,
                                                                                  p2[:, :3], p2, d)),
                     ("/kitti/camera_color_left/image_raw", t, rb.image(t, "camera_color_left", rgb)),
                     ("/kitti/velo/pointcloud", t + 2_000_000, rb.cloud(t + 2_000_000, "velo_link", points[i]))]
    return rb.write_bag(path, messages)


def devkit_depth(points: np.ndarray, p2: np.ndarray, rect_from_velo: np.ndarray, size) -> np.ndarray:
    """KITTI's devkit projection: P_rect_02 @ R_rect_00 @ [R|T] of Velodyne points (x forward), pixel
    (round(u), round(v)), depth the third coordinate, the nearest point per pixel."""
    height, width = size
    pts = points[points[:, 0] >= 0]
    uvz = (p2 @ rect_from_velo @ np.hstack([pts, np.ones((len(pts), 1))]).T).T
    u, v, z = np.round(uvz[:, 0] / uvz[:, 2]), np.round(uvz[:, 1] / uvz[:, 2]), uvz[:, 2]
    keep = (u >= 0) & (v >= 0) & (u < width) & (v < height) & (z >= 0.1) & (z <= 80.0)
    out = np.full((height, width), np.inf)
    np.minimum.at(out, (v[keep].astype(int), u[keep].astype(int)), z[keep])
    out[np.isinf(out)] = 0
    return out


def lidar_scans(frames, n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    return [np.stack([rng.uniform(-20, 70, n), rng.uniform(-25, 25, n), rng.uniform(-1.8, 2.5, n)], axis=1)
            .astype(np.float32).astype(np.float64) for _ in range(frames)]  # what a PointCloud2 of float32 holds


def _opts(**kw):
    base = dict(image_topic="/kitti/camera_color_left/image_raw",
                camera_info_topic="/kitti/camera_color_left/camera_info", depth_topic="/kitti/velo/pointcloud")
    return Options(**{**base, **kw})


def _read_list(out, name):
    return [line.split() for line in (out / name).read_text().splitlines()]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_kitti_lidar_projection_equals_the_devkit(tmp_path, storage):
    scans = lidar_scans(3)
    bag = tmp_path / f"kitti_{storage}"
    if storage == "mcap":
        kitti_bag(bag, scans)
    else:
        p2, _, size = kitti_calibration()
        messages = []
        kitti_bag(tmp_path / "tmp_mcap", scans)
        from rosbags.rosbag2 import Reader

        with Reader(tmp_path / "tmp_mcap") as reader:
            for connection, ns, raw in reader.messages():
                messages.append((connection.topic, ns, rb.TS.deserialize_cdr(raw, connection.msgtype)))
        rb.write_bag(bag, messages, "sqlite3")
    out = tmp_path / "set"
    summary = convert(bag, out, _opts(val_fraction=0.0))
    assert summary.written == 3 and not sum(summary.skipped.values())
    p2, rect_from_velo, size = kitti_calibration()
    lines = _read_list(out, "train.txt")
    assert [line[2] for line in lines] == [f"{p2[0, 0]:.4f}"] * 3
    for i, (image_rel, depth_rel, _) in enumerate(lines):
        written = cv2.imread(str(out / depth_rel), cv2.IMREAD_UNCHANGED)
        expected = np.round(devkit_depth(scans[i], p2, rect_from_velo, size) * 256.0).astype(np.uint16)
        assert written.dtype == np.uint16 and written.shape == size
        assert (expected > 0).sum() > 5000
        np.testing.assert_array_equal(written, expected)
        sample = cv2.imread(str(SAMPLE / "2011_09_26_drive_0001_sync" / "image_02" / "data" / f"{i:010d}.png"))
        np.testing.assert_array_equal(cv2.imread(str(out / image_rel)), sample)
    camera = yaml.safe_load((out / "camera.yaml").read_text())
    assert (camera["image_width"], camera["image_height"], camera["frame_id"]) == (size[1], size[0],
                                                                                  "camera_color_left")
    assert camera["projection_matrix"]["data"] == pytest.approx(p2.ravel().tolist())
    report = yaml.safe_load((out / "summary.yaml").read_text())
    assert report["frames_written"] == 3 and 0 < report["median_depth_density"] < 0.2


def test_command_line_and_the_trainers_list_format(tmp_path, capsys):
    kitti_bag(tmp_path / "bag", lidar_scans(3, 5000))
    out = tmp_path / "set"
    assert main([str(tmp_path / "bag"), "--image-topic", "/kitti/camera_color_left/image_raw",
                 "--camera-info-topic", "/kitti/camera_color_left/camera_info", "--depth-topic",
                 "/kitti/velo/pointcloud", "--out", str(out), "--every", "2"]) == 0
    printed = capsys.readouterr().out
    assert "2 frames written" in printed and "python train/finetune.py --data" in printed
    from space_clip_train.data import read_list

    samples = read_list(out / "train.txt") + read_list(out / "val.txt")
    assert len(samples) == 2 and all((out / s.image).is_file() and (out / s.depth).is_file() for s in samples)


def _moving_robot_bag(path, world, seconds=3.0, image_hz=10, lidar_hz=10, speed=1.0, tf_hz=20, lidar_delay=0.013,
                      tf_seconds=None):
    """A robot driving along x in odom at ``speed`` m/s with a forward lidar and camera; ``world`` points fixed in
    odom. Returns the bag path and the camera's pose function (odom <- optical at t)."""
    k = np.array([[300.0, 0, 160.0], [0, 300.0, 120.0], [0, 0, 1]])
    base_from_lidar = _rigid(np.eye(3), [0.2, 0.0, 1.0])
    base_from_optical = _rigid(np.eye(3), [0.3, 0.05, 0.9]) @ np.linalg.inv(OPTICAL)

    def odom_from_base(t):
        return _rigid(_rot_z(0.05 * t), [speed * t, 0.02 * t * t, 0.0])

    messages = [("/tf_static", 0, rb.tf_message([rb.transform(0, "base_link", "lidar", base_from_lidar),
                                                 rb.transform(0, "base_link", "cam_optical", base_from_optical)]))]
    for n in range(int((tf_seconds or seconds) * tf_hz) + 1):
        t = n / tf_hz
        messages.append(("/tf", int(t * S), rb.tf_message([rb.transform(int(t * S), "odom", "base_link",
                                                                         odom_from_base(t))])))
    for n in range(1, int(seconds * lidar_hz)):
        t = n / lidar_hz + lidar_delay
        lidar_from_odom = np.linalg.inv(odom_from_base(t) @ base_from_lidar)
        local = (lidar_from_odom[:3, :3] @ world.T).T + lidar_from_odom[:3, 3]
        messages.append(("/lidar/points", int(t * S), rb.cloud(int(t * S), "lidar", local[n % 3::3])))  # a third each
    for n in range(1, int(seconds * image_hz)):
        t = n / image_hz
        messages.append(("/cam/camera_info", int(t * S), rb.camera_info(int(t * S), "cam_optical", (240, 320), k)))
        messages.append(("/cam/image", int(t * S), rb.image(int(t * S), "cam_optical",
                                                              np.full((240, 320, 3), 90, np.uint8))))
    messages.sort(key=lambda m: m[1])
    return rb.write_bag(path, messages), k, (lambda t: odom_from_base(t) @ base_from_optical)


def test_scans_merged_through_odom_with_interpolated_tf(tmp_path):
    rng = np.random.default_rng(1)
    world = np.stack([rng.uniform(4, 30, 60_000), rng.uniform(-8, 8, 60_000), rng.uniform(0.0, 3.0, 60_000)], 1)
    bag, k, odom_from_optical = _moving_robot_bag(tmp_path / "robot", world)
    opts = Options("/cam/image", "/cam/camera_info", "/lidar/points", val_fraction=0.0)
    single = convert(bag, tmp_path / "single", opts)
    opts.accumulate, opts.fixed_frame = 2, "odom"
    merged = convert(bag, tmp_path / "merged", opts)
    assert merged.written == single.written >= 20
    assert np.median(merged.densities) > 1.5 * np.median(single.densities)  # all three thirds of the world
    # Every merged pixel is where the camera sees a world point at the image's time (tf interpolated between the
    # 20 Hz samples, scans from 13 ms after each image and from neighbouring scans).
    line = _read_list(tmp_path / "merged", "train.txt")[5]
    t = int(Path(line[0]).stem) + 1  # image n at n / 10 s (frames start at 0.1 s)
    camera_from_odom = np.linalg.inv(odom_from_optical(t / 10))
    seen = (camera_from_odom[:3, :3] @ world.T).T + camera_from_odom[:3, 3]
    from space_clip_ros.geometry import project_to_depth

    full = project_to_depth(seen, (240, 320), k, max_depth=80.0)
    depth = cv2.imread(str(tmp_path / "merged" / line[1]), cv2.IMREAD_UNCHANGED) / 256.0
    have = depth > 0
    # A merged point is a world point seen from the camera: at least as far as the nearest world point on its pixel
    # (up to the 1/256 m quantum and points whose u or v sits on a rounding boundary); mostly that very point.
    assert have.sum() > 500
    assert (depth[have] >= full[have] - 0.005).mean() > 0.999
    assert (np.abs(depth[have] - full[have]) < 0.005).mean() > 0.9


def test_pairing_skips_are_counted_by_reason(tmp_path):
    rng = np.random.default_rng(2)
    world = np.stack([rng.uniform(4, 30, 30_000), rng.uniform(-8, 8, 30_000), rng.uniform(0.0, 3.0, 30_000)], 1)
    bag, _, _ = _moving_robot_bag(tmp_path / "robot", world, lidar_delay=0.07)  # scans 30 ms before, 70 after
    opts = Options("/cam/image", "/cam/camera_info", "/lidar/points", val_fraction=0.0, max_dt=0.02)
    summary = convert(bag, tmp_path / "none", opts)
    assert summary.written == 0 and summary.skipped["no_depth_within_max_dt"] == 29
    opts.max_dt, opts.every = 0.05, 2
    paired = convert(bag, tmp_path / "some", opts)
    assert paired.written == 14 and paired.skipped["no_depth_within_max_dt"] == 1  # the first image has no scan before
    # Scans merged through odom need odom's tf at every scan's time: here it stops at 2.5 s.
    bag, _, _ = _moving_robot_bag(tmp_path / "short_tf", world, tf_seconds=2.5)
    late = convert(bag, tmp_path / "late", Options("/cam/image", "/cam/camera_info", "/lidar/points",
                                                   val_fraction=0.0, accumulate=1, fixed_frame="odom"))
    assert late.skipped["no_tf"] == 6 and late.written == 23  # images from 2.4 s (its later scan: 2.513 s) on


@pytest.mark.parametrize("ahead", [0.0, 0.1])
def test_rgbd_depth_in_another_frame_is_reprojected(tmp_path, ahead):
    """A depth camera in its own frame, ``ahead`` metres in front of the colour camera (tf), with its own
    camera_info; 16UC1 and 32FC1 frames; a compressed colour stream; a single .mcap file."""
    size = (96, 288)
    k = tuple(v * (288 / KITTI_SIZE[1] if i != 3 else 96 / KITTI_SIZE[0]) for i, v in enumerate(KITTI_K))
    kk = np.array([[k[0], 0, k[2]], [0, k[1], k[3]], [0, 0, 1]])
    messages = [("/tf_static", 0, rb.tf_message([rb.transform(0, "camera_color_optical_frame",
                                                                "camera_depth_optical_frame",
                                                                _rigid(np.eye(3), [0.0, 0.0, ahead]))]))]
    truth = {}
    for i in range(3):
        t = (i + 1) * S // 10
        rgb, colour_depth = render_scene(size=size, intrinsics=k, forward=2.0 * i)
        _, depth_view = render_scene(size=size, intrinsics=k, forward=2.0 * i + ahead)
        truth[i] = colour_depth
        messages += [("/camera/color/camera_info", t, rb.camera_info(t, "camera_color_optical_frame", size, kk)),
                     ("/camera/color/image_raw/compressed", t, rb.compressed(t, "camera_color_optical_frame", rgb)),
                     ("/camera/depth/camera_info", t, rb.camera_info(t, "camera_depth_optical_frame", size, kk)),
                     ("/camera/depth/image_rect_raw", t, rb.depth_image(t, "camera_depth_optical_frame",
                                                                          depth_view, "16UC1" if i else "32FC1"))]
    bag = rb.write_bag(tmp_path / "rgbd.mcap", messages)  # a single .mcap file, as some tools record
    summary = convert(bag, tmp_path / "set", Options("/camera/color/image_raw/compressed",
                                                     "/camera/color/camera_info", "/camera/depth/image_rect_raw",
                                                     val_fraction=0.0))
    assert summary.written == 3
    for i, line in enumerate(_read_list(tmp_path / "set", "train.txt")):
        depth = cv2.imread(str(tmp_path / "set" / line[1]), cv2.IMREAD_UNCHANGED) / 256.0
        both = (depth > 0) & (truth[i] > 0)
        assert both.mean() > 0.5
        error = np.abs(depth[both] - truth[i][both]) / truth[i][both]
        if ahead == 0:  # the same viewpoint: only the mm of 16UC1 and the 1/256 m of the output
            assert np.quantile(np.abs(depth[both] - truth[i][both]), 0.99) < 0.005
        else:  # another viewpoint: resampled to the nearest pixel on a slanted road (z / (2 f h) per pixel)
            assert np.median(error) < 0.02


def test_validation_is_whole_blocks_of_time(tmp_path):
    rng = np.random.default_rng(3)
    world = np.stack([rng.uniform(4, 30, 20_000), rng.uniform(-8, 8, 20_000), rng.uniform(0.0, 3.0, 20_000)], 1)
    bag, _, _ = _moving_robot_bag(tmp_path / "robot", world, seconds=6.0)
    summary = convert(bag, tmp_path / "set", Options("/cam/image", "/cam/camera_info", "/lidar/points",
                                                     val_fraction=1 / 3, val_block_s=1.0))
    train = [int(Path(line[0]).stem) for line in _read_list(tmp_path / "set", "train.txt")]
    val = [int(Path(line[0]).stem) for line in _read_list(tmp_path / "set", "val.txt")]
    assert summary.val == len(val) > 0 and summary.train == len(train) > 1.5 * len(val)
    runs = np.split(np.array(val), np.nonzero(np.diff(val) > 1)[0] + 1)
    assert len(runs) >= 2 and all(len(r) >= 8 for r in runs)  # whole 1 s blocks of 10 Hz frames


def test_broken_inputs_fail_with_a_message_that_names_them(tmp_path, capsys):
    kitti_bag(tmp_path / "bag", lidar_scans(3, 2000))

    def run(*args, bag=tmp_path / "bag"):
        code = main([str(bag), "--image-topic", "/kitti/camera_color_left/image_raw", "--camera-info-topic",
                     "/kitti/camera_color_left/camera_info", "--depth-topic", "/kitti/velo/pointcloud",
                     "--out", str(tmp_path / f"out{len(list(tmp_path.iterdir()))}"), *args])
        return code, capsys.readouterr().err

    code, err = run(bag=tmp_path / "nothing")
    assert code == 1 and "does not exist" in err
    code, err = main([str(tmp_path / "bag"), "--image-topic", "/cam/image", "--camera-info-topic",
                      "/kitti/camera_color_left/camera_info", "--depth-topic", "/kitti/velo/pointcloud", "--out",
                      str(tmp_path / "x")]), capsys.readouterr().err
    assert code == 1 and "no topic /cam/image" in err and "/kitti/velo/pointcloud (sensor_msgs/msg/PointCloud2" in err
    code, err = main([str(tmp_path / "bag"), "--image-topic", "/kitti/velo/pointcloud", "--camera-info-topic",
                      "/kitti/camera_color_left/camera_info", "--depth-topic", "/kitti/velo/pointcloud", "--out",
                      str(tmp_path / "y")]), capsys.readouterr().err
    assert code == 1 and "is sensor_msgs/msg/PointCloud2, but --image-topic must be" in err
    mcap = next((tmp_path / "bag").glob("*.mcap"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.yaml").write_text((tmp_path / "bag" / "metadata.yaml").read_text())
    (broken / mcap.name).write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    code, err = run(bag=broken)
    assert code == 1 and ("truncated" in err or "cannot read" in err)
    empty = tmp_path / "empty.mcap"
    empty.write_bytes(b"")
    code, err = run(bag=empty)
    assert code == 1 and "cannot read" in err
    code, err = run("--accumulate", "2")
    assert code == 1 and "--accumulate needs --fixed-frame" in err


def test_tf_tree_composes_chains_and_interpolates():
    tree = TfTree()
    a = _rigid(_rot_z(0.4), [1.0, 2.0, 0.5])
    tree.add("base", "lidar", 0, a[:3, 3], rb.matrix_quaternion(a[:3, :3]), static=True)
    tree.add("base", "camera", 0, [0, 0, 1.0], rb.matrix_quaternion(np.eye(3)), static=True)
    for t, (x, yaw) in enumerate([(0.0, 0.0), (2.0, 1.0)]):
        tree.add("odom", "base", t * S, [x, 0, 0], rb.matrix_quaternion(_rot_z(yaw)))
    np.testing.assert_allclose(tree.lookup("camera", "lidar", 0), np.linalg.inv(_rigid(np.eye(3), [0, 0, 1.0])) @ a,
                               atol=1e-12)
    half = tree.lookup("odom", "base", S // 2)
    np.testing.assert_allclose(half, _rigid(_rot_z(0.5), [1.0, 0, 0]), atol=1e-12)  # slerp halfway
    np.testing.assert_allclose(tree.lookup("lidar", "odom", S // 4) @ tree.lookup("odom", "lidar", S // 4), np.eye(4),
                               atol=1e-12)
    from space_clip_ros.tf_tree import TfError

    with pytest.raises(TfError, match="outside its recorded transforms"):
        tree.lookup("odom", "lidar", 2 * S)
    with pytest.raises(TfError, match="no tf path between map and camera"):
        tree.lookup("camera", "map", 0)


def test_a_raw_image_projects_through_its_distortion():
    """A camera_info with plumb_bob distortion (an unrectified image): pixels from the distortion model, written out
    here (radial k1, k2, k3 and tangential p1, p2), K's focal length; the nearest point wins."""
    from space_clip_ros.geometry import project_to_depth

    k = np.array([[400.0, 0, 320.0], [0, 410.0, 240.0], [0, 0, 1]])
    d = np.array([-0.25, 0.08, 0.001, -0.0015, -0.01])
    rng = np.random.default_rng(5)
    points = np.stack([rng.uniform(-4, 4, 5000), rng.uniform(-3, 3, 5000), rng.uniform(2, 20, 5000)], 1)
    points = np.concatenate([points, points[:50] * [1, 1, 1.5]])  # farther points behind the first 50: hidden
    depth = project_to_depth(points, (480, 640), k, d, "plumb_bob", 0.1, 80.0, np.float64)
    x, y = points[:, 0] / points[:, 2], points[:, 1] / points[:, 2]
    r2 = x * x + y * y
    radial = 1 + d[0] * r2 + d[1] * r2 ** 2 + d[4] * r2 ** 3
    xd = x * radial + 2 * d[2] * x * y + d[3] * (r2 + 2 * x * x)
    yd = y * radial + d[2] * (r2 + 2 * y * y) + 2 * d[3] * x * y
    u, v = np.round(k[0, 0] * xd + k[0, 2]).astype(int), np.round(k[1, 1] * yd + k[1, 2]).astype(int)
    inside = (u >= 0) & (u < 640) & (v >= 0) & (v < 480)
    expected = np.full((480, 640), np.inf)
    np.minimum.at(expected, (v[inside], u[inside]), points[inside, 2])
    expected[np.isinf(expected)] = 0
    assert (expected > 0).sum() > 3000
    np.testing.assert_allclose(depth, expected, rtol=1e-12)


def test_rectified_frames_with_a_raw_calibrations_distortion(tmp_path):
    """KITTI's synced frames are rectified, but converters often copy the raw camera's D into camera_info: the depth
    then lands where a raw image's pixels would be, unless --ignore-distortion says the frames are rectified."""
    scans = lidar_scans(1, 20_000)
    d_02 = (-3.691481e-01, 1.968681e-01, 1.353473e-03, 5.677587e-04, -6.770705e-02)  # KITTI 2011_09_26's raw D_02
    kitti_bag(tmp_path / "bag", scans, frames=1, d=d_02)
    p2, rect_from_velo, size = kitti_calibration()
    expected = np.round(devkit_depth(scans[0], p2, rect_from_velo, size) * 256.0).astype(np.uint16)
    for ignore, equal in ((False, False), (True, True)):
        out = tmp_path / f"set_{ignore}"
        convert(tmp_path / "bag", out, _opts(val_fraction=0.0, ignore_distortion=ignore))
        written = cv2.imread(str(out / "depth" / "000000.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, expected) is equal
