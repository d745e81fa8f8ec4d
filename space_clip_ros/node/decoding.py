"""ROS image and camera_info messages read without ROS (duck-typed: rclpy's messages and rosbags' alike): any
supported encoding or jpeg/png as RGB, 32FC1 depth, usable intrinsics. Every refusal is an :class:`InputRejected`
that names its reason."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from ..geometry import camera_intrinsics

#: encoding -> (channels, numpy scalar type, channel order of colour encodings)
ENCODINGS = {
    "rgb8": (3, np.uint8, "rgb"),
    "bgr8": (3, np.uint8, "bgr"),
    "rgba8": (4, np.uint8, "rgb"),
    "bgra8": (4, np.uint8, "bgr"),
    "mono8": (1, np.uint8, "mono"),
    "8UC3": (3, np.uint8, "bgr"),
    "rgb16": (3, np.uint16, "rgb"),
    "bgr16": (3, np.uint16, "bgr"),
    "rgba16": (4, np.uint16, "rgb"),
    "bgra16": (4, np.uint16, "bgr"),
    "mono16": (1, np.uint16, "mono"),
    "32FC1": (1, np.float32, "mono"),  # intensity in [0, 1]
    "32FC3": (3, np.float32, "rgb"),   # RGB in [0, 1]
}


#: Encodings of REP 104 / sensor_msgs' image_encodings that are valid ROS images but not decoded here (YUV and Bayer
#: need a debayer / colour conversion node first, e.g. image_proc).
KNOWN_UNSUPPORTED = ("yuv422", "yuv422_yuy2", "uyvy", "yuyv", "nv21", "nv24", "bayer_rggb8", "bayer_bggr8",
                     "bayer_gbrg8", "bayer_grbg8", "bayer_rggb16", "bayer_bggr16", "bayer_gbrg16", "bayer_grbg16",
                     "8UC1", "8UC2", "8UC4", "16UC1", "16UC3", "16SC1", "32SC1", "32FC2", "32FC4", "64FC1")
#: Images larger than this on either side are refused before any allocation (a declared 100000 x 100000 image).
MAX_SIDE = 16384
#: Formats of CompressedImage that are decoded (image_transport's "jpeg"/"png", and "<enc>; jpeg compressed <enc>").
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


class InputRejected(ValueError):
    """An input that cannot be used; ``reason`` is a short stable name (counted per reason in diagnostics), the
    message says what is wrong."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def image_to_rgb(msg: Any) -> np.ndarray:
    """An Image of any supported encoding as HxWx3 uint8 RGB (honours ``step`` padding and ``is_bigendian``).
    Raises :class:`InputRejected` naming the reason."""
    encoding = msg.encoding
    if not encoding:
        raise InputRejected("empty_encoding", "empty encoding (set sensor_msgs/Image.encoding, e.g. 'rgb8')")
    if encoding not in ENCODINGS:
        if encoding in KNOWN_UNSUPPORTED or encoding.startswith("bayer_") or encoding.startswith("yuv"):
            raise InputRejected("unsupported_encoding", f"unsupported encoding '{encoding}' (convert it first, e.g. "
                                f"with image_proc; supported: {', '.join(ENCODINGS)})")
        raise InputRejected("unknown_encoding", f"unknown encoding '{encoding}' (supported: {', '.join(ENCODINGS)})")
    channels, dtype, order = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise InputRejected("empty_image", f"zero-size image ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise InputRejected("image_too_large", f"declared size {width}x{height} exceeds {MAX_SIDE} px on a side")
    if msg.is_bigendian not in (0, 1, True, False):
        raise InputRejected("invalid_is_bigendian", f"is_bigendian is {msg.is_bigendian}, not 0 or 1")
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    data = msg.data
    if itemsize > 1 and (len(data) % itemsize or step % itemsize):
        raise InputRejected("misaligned_data", f"{encoding} needs whole {itemsize}-byte values, got {len(data)} "
                            f"bytes with step {step}")
    if step < row_bytes:
        raise InputRejected("step_too_small", f"step {step} is shorter than one row of {width} {encoding} pixels "
                            f"({row_bytes} bytes)")
    if len(data) < step * height:
        raise InputRejected("data_too_short", f"data holds {len(data)} bytes but step*height = {step}*{height} = "
                            f"{step * height}")
    raw = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)[:, :row_bytes]
    pixels = raw.view(np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<") if itemsize > 1 else dtype)
    pixels = pixels.reshape(height, width, channels)
    if dtype == np.float32:
        if not np.isfinite(pixels).all():
            raise InputRejected("non_finite_pixels", f"{encoding} image holds NaN or infinite pixels")
        pixels = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if order == "mono":
        return np.repeat(pixels, 3, axis=2)
    pixels = pixels[..., :3]
    if order == "bgr":
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(pixels)


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """A jpeg or png CompressedImage as HxWx3 uint8 RGB; raises :class:`InputRejected` naming the reason (unknown
    format, empty, not an image, truncated, undecodable)."""
    import cv2

    fmt = (msg.format or "").lower()
    if fmt and not any(name in fmt for name in COMPRESSED_FORMATS):
        raise InputRejected("unknown_compressed_format", f"compressed format '{msg.format}' is not jpeg or png")
    data = bytes(msg.data)
    if len(data) == 0:
        raise InputRejected("empty_compressed", "empty compressed image (0 bytes)")
    if data.startswith(_JPEG_START):
        if not data.rstrip(b"\x00").endswith(_JPEG_END):
            raise InputRejected("truncated_compressed", f"jpeg data of {len(data)} bytes has no end marker "
                                "(truncated)")
    elif data.startswith(_PNG_START):
        if _PNG_END not in data[-16:]:
            raise InputRejected("truncated_compressed", f"png data of {len(data)} bytes has no IEND chunk "
                                "(truncated)")
    else:
        raise InputRejected("not_an_image", f"compressed data ({len(data)} bytes, format '{msg.format}') is neither "
                            "jpeg nor png")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputRejected("undecodable_compressed", f"could not decode compressed image (format '{msg.format}', "
                            f"{len(data)} bytes)")
    return np.ascontiguousarray(bgr[..., ::-1])


def any_image_to_rgb(msg: Any) -> np.ndarray:
    """An Image or a CompressedImage (the one with a ``format`` field) as HxWx3 uint8 RGB."""
    return compressed_to_rgb(msg) if hasattr(msg, "format") else image_to_rgb(msg)


def image_to_depth(msg: Any) -> np.ndarray:
    """A 32FC1 depth Image as HxW float32 (for tests and tools)."""
    if msg.encoding != "32FC1":
        raise ValueError(f"expected a 32FC1 depth image, got '{msg.encoding}'")
    order = ">" if msg.is_bigendian else "<"
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)[:, :msg.width * 4]
    return rows.view(np.dtype("f4").newbyteorder(order)).astype(np.float32).reshape(msg.height, msg.width)


def check_camera_info(info: Any) -> None:
    """Raise :class:`InputRejected` unless the intrinsics can be used: finite, positive focal lengths in P (or K when
    P is unset) and a non-zero size."""
    fx, fy = camera_intrinsics(info.k, info.p)[:2]
    where = f"camera_info has unusable focal lengths fx={fx}, fy={fy} (P and K)"
    if not np.isfinite([fx, fy]).all():
        raise InputRejected("info_non_finite_focal", f"{where}: not finite")
    if fx == 0 or fy == 0:
        raise InputRejected("info_zero_focal", f"{where}: zero (an uncalibrated camera?)")
    if fx < 0 or fy < 0:
        raise InputRejected("info_negative_focal", f"{where}: negative")
    if info.width == 0 or info.height == 0:
        raise InputRejected("info_zero_size", f"camera_info has zero size ({info.width}x{info.height})")


def intrinsics(info: Any) -> Tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from P (rectified), falling back to K when P is unset."""
    return camera_intrinsics(info.k, info.p)


def cloud_to_array(msg: Any) -> np.ndarray:
    """(H, W, point_step // 4) float32 view of a cloud written by :func:`cloud_message` (tests and tools)."""
    return np.frombuffer(msg.data, dtype=np.float32).reshape(msg.height, msg.width, msg.point_step // 4)
