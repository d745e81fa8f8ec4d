"""sensor_msgs <-> numpy without a ROS graph: decoding every encoding, step padding and byte order; depth images,
camera_info scaling and organized clouds with their exact byte layout."""

import sys

import numpy as np
import pytest

pytest.importorskip("sensor_msgs", reason="needs the ROS message packages: pip install -e '.[ros]'")

from oracles import depth_to_points, points_to_cloud  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from space_clip_ros.node import decoding  # noqa: E402
from space_clip_ros.ros import messages  # noqa: E402


def _image(pixels, encoding, pad=0, bigendian=False):
    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8) if pixels.dtype != np.uint8 else pixels.reshape(height, -1)
    if bigendian:
        row = pixels.astype(pixels.dtype.newbyteorder(">")).reshape(height, -1).view(np.uint8)
    data = np.concatenate([row, np.zeros((height, pad), np.uint8)], axis=1)
    return Image(height=height, width=width, encoding=encoding, step=data.shape[1], is_bigendian=int(bigendian),
                 data=messages.message_data(data))


RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]), ("rgba8", np.dstack([RGB, np.full((5, 7), 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[..., ::-1], np.zeros((5, 7), np.uint8)])),
])
@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_decode_to_rgb(encoding, pixels, pad):
    np.testing.assert_array_equal(decoding.image_to_rgb(_image(np.ascontiguousarray(pixels), encoding, pad)), RGB)


@pytest.mark.parametrize("bigendian", [False, True])
def test_sixteen_bit_and_float_encodings(bigendian):
    wide = RGB.astype(np.uint16) * 257
    np.testing.assert_array_equal(decoding.image_to_rgb(_image(wide, "rgb16", bigendian=bigendian)), RGB)
    mono = decoding.image_to_rgb(_image(wide[..., 0].copy(), "mono16", bigendian=bigendian))
    np.testing.assert_array_equal(mono, np.repeat(RGB[..., :1], 3, axis=2))
    unit = (RGB / 255.0).astype(np.float32)
    np.testing.assert_array_equal(decoding.image_to_rgb(_image(unit, "32FC3", bigendian=bigendian)), RGB)


@pytest.mark.parametrize("msg, reason, match", [
    (Image(height=2, width=2, encoding="rgb9", step=6, data=bytes(12)), "unknown_encoding", "unknown encoding"),
    (Image(height=2, width=2, encoding="", step=6, data=bytes(12)), "empty_encoding", "empty encoding"),
    (Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8)), "unsupported_encoding",
     "unsupported encoding 'yuv422'"),
    (Image(height=2, width=2, encoding="bayer_grbg8", step=2, data=bytes(4)), "unsupported_encoding", "bayer_grbg8"),
    (Image(height=0, width=2, encoding="rgb8", step=6), "empty_image", "zero-size"),
    (Image(height=2, width=2, encoding="rgb8", step=5, data=bytes(10)), "step_too_small", "step 5 is shorter"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(7)), "data_too_short", "data holds 7 bytes"),
    (Image(height=100000, width=100000, encoding="rgb8", step=300000, data=bytes(64)), "image_too_large",
     "exceeds 16384"),
    (Image(height=1, width=1, encoding="32FC1", step=4, data=np.float32([np.nan]).tobytes()), "non_finite_pixels",
     "NaN"),
    (Image(height=1, width=1, encoding="32FC1", step=4, data=np.float32([-np.inf]).tobytes()), "non_finite_pixels",
     "infinite"),
    (Image(height=2, width=2, encoding="mono16", step=4, data=bytes(9)), "misaligned_data", "2-byte values"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12), is_bigendian=7), "invalid_is_bigendian",
     "is_bigendian is 7"),
])
def test_bad_images_raise_with_the_reason(msg, reason, match):
    with pytest.raises(decoding.InputRejected, match=match) as caught:
        decoding.image_to_rgb(msg)
    assert caught.value.reason == reason


@pytest.mark.parametrize("fmt, data, reason", [
    ("jpeg", b"", "empty_compressed"),
    ("jpeg", b"\xff\xd8\xff\xe0 cut here", "truncated_compressed"),
    ("png", b"\x89PNG\r\n\x1a\n" + bytes(40), "truncated_compressed"),
    ("jpeg", b"not an image at all", "not_an_image"),
    ("h264", b"\x00\x00\x00\x01", "unknown_compressed_format"),
    ("jpeg", b"\xff\xd8" + bytes(32) + b"\xff\xd9", "undecodable_compressed"),
])
def test_bad_compressed_images_raise_with_the_reason(fmt, data, reason):
    with pytest.raises(decoding.InputRejected) as caught:
        decoding.compressed_to_rgb(CompressedImage(format=fmt, data=data))
    assert caught.value.reason == reason


def test_a_jpeg_cut_short_is_refused_not_decoded_grey():
    import cv2

    ok, jpeg = cv2.imencode(".jpg", RGB[..., ::-1])
    whole = CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpeg.tobytes())
    assert decoding.compressed_to_rgb(whole).shape == RGB.shape
    with pytest.raises(decoding.InputRejected, match="truncated"):
        decoding.compressed_to_rgb(CompressedImage(format="jpeg", data=jpeg.tobytes()[:-40]))


def test_compressed_round_trip_and_corrupt_data():
    import cv2

    ok, png = cv2.imencode(".png", RGB[..., ::-1])
    assert ok
    msg = CompressedImage(format="png", data=messages.message_data(png))
    np.testing.assert_array_equal(decoding.compressed_to_rgb(msg), RGB)
    with pytest.raises(ValueError, match="neither jpeg nor png"):
        decoding.compressed_to_rgb(CompressedImage(format="jpeg", data=b"not an image"))
    with pytest.raises(ValueError, match="empty"):
        decoding.compressed_to_rgb(CompressedImage(format="jpeg"))


def test_depth_image_is_rep118_and_round_trips():
    depth = np.random.default_rng(1).uniform(0.5, 80, (4, 6)).astype(np.float32)
    depth[0, 0] = np.nan
    msg = messages.depth_to_image(depth, Image().header)
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("32FC1", 24, int(sys.byteorder == "big"))
    np.testing.assert_array_equal(decoding.image_to_depth(msg), depth)
    assert bytes(msg.data) == depth.tobytes()


def test_camera_info_scaling_and_intrinsics():
    info = CameraInfo(width=1242, height=375)
    info.k = [721.5, 0.0, 609.6, 0.0, 721.5, 172.9, 0.0, 0.0, 1.0]
    info.p = [721.5, 0.0, 609.6, 44.9, 0.0, 721.5, 172.9, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.roi.x_offset, info.roi.width = 10, 100
    half = messages.scale_camera_info(info, 621, 125)
    assert (half.width, half.height) == (621, 125)
    assert decoding.intrinsics(half) == pytest.approx((360.75, 240.5, 304.8, 57.6333), rel=1e-4)
    assert half.p[3] == pytest.approx(22.45) and (half.roi.x_offset, half.roi.width) == (5, 50)
    decoding.check_camera_info(info)
    bad = CameraInfo(width=10, height=10)
    with pytest.raises(ValueError, match="unusable focal lengths"):
        decoding.check_camera_info(bad)
    for fx, reason in ((0.0, "info_zero_focal"), (float("nan"), "info_non_finite_focal"),
                       (-5.0, "info_negative_focal")):
        bad.k = [fx, 0.0, 5.0, 0.0, 10.0, 5.0, 0.0, 0.0, 1.0]
        with pytest.raises(decoding.InputRejected) as caught:
            decoding.check_camera_info(bad)
        assert caught.value.reason == reason
    with pytest.raises(decoding.InputRejected) as caught:
        decoding.check_camera_info(CameraInfo(width=0, height=10, k=[5.0, 0, 1, 0, 5.0, 1, 0, 0, 1]))
    assert caught.value.reason == "info_zero_size"


@pytest.mark.parametrize("with_rgb", [False, True])
def test_cloud_layout_matches_depth_image_proc(with_rgb):
    depth = np.random.default_rng(2).uniform(1, 50, (6, 8)).astype(np.float32)
    depth[1, 1] = np.nan
    points = depth_to_points(depth, 500.0, 500.0, 4.0, 3.0)
    colour = np.random.default_rng(3).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    cloud = points_to_cloud(points, Image().header, colour if with_rgb else None)
    step = 32 if with_rgb else 16
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step, cloud.is_dense) == (6, 8, step, 8 * step,
                                                                                               False)
    names = [(f.name, f.offset) for f in cloud.fields]
    assert names == [("x", 0), ("y", 4), ("z", 8)] + ([("rgb", 16)] if with_rgb else [])
    rows = decoding.cloud_to_array(cloud)
    np.testing.assert_array_equal(rows[..., :3], points)
    if with_rgb:
        packed = rows[..., 4].view(np.uint32)
        assert packed[2, 3] == (int(colour[2, 3, 0]) << 16) | (int(colour[2, 3, 1]) << 8) | int(colour[2, 3, 2])
    with pytest.raises(ValueError, match="cloud rows must be"):
        messages.cloud_message(np.zeros((2, 2, 3), np.float32), Image().header)


def test_empty_clouds_make_messages():
    """A filtered cloud with every point dropped (or an empty reference) is a message of width 0, not an error."""
    from std_msgs.msg import Header

    msg = messages.cloud_message(np.zeros((0, 3), np.float32), Header(frame_id="cam"))
    assert (msg.width, msg.height, len(msg.data)) == (0, 1, 0)
    assert len(messages.message_data(np.zeros((0, 1, 4), np.float32))) == 0
