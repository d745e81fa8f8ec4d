"""From a camera's image message to a :class:`~.frame_pipeline.FrameRequest`, without publishers or DDS: stamp
order, decoding, size limits, camera_info pairing and checks, focal-length scale, output size, wanted outputs.
Every refusal is an :class:`~.decoding.InputRejected` with a reason name; notes for the log come back with the
frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..stamps import format_ns, stamp_ns
from . import decoding
from .camera_state import CameraState
from .frame_pipeline import OPTIONAL_OUTPUTS, CameraModel, FrameRequest
from .settings import NodeSettings

#: Frames smaller than this on a side are refused (the model sees 224x224; a 1x1 "image" is a broken driver).
MIN_SIDE = 16


class Rejected(Exception):
    """A frame that cannot be used: ``kind`` (image, camera_info), ``reason`` (a stable name), ``message``."""

    def __init__(self, kind: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.reason = kind, reason


@dataclass
class Intake:
    request: FrameRequest
    info: Optional[Any]  # the camera_info paired with the image, None when none came
    notes: List[Tuple[str, str, str]] = field(default_factory=list)  # (throttle key, text, level) for the log


def wanted_outputs(settings: NodeSettings, listeners: Dict[str, int]) -> frozenset:
    """The optional outputs someone subscribes to (and that the parameters enable)."""
    enabled = {"colored": settings.publish_colored, "points": settings.publish_points}
    return frozenset(k for k in OPTIONAL_OUTPUTS if listeners.get(k) and enabled.get(k, True))


def output_size(settings: NodeSettings, model_size: Tuple[int, int], height: int, width: int) -> Tuple[int, int]:
    mode = settings.output_size.strip().lower()
    if mode == "input":
        return height, width
    if mode == "model":
        return tuple(model_size)  # type: ignore[return-value]
    return settings.fixed_output_size  # type: ignore[return-value]


def take_frame(settings: NodeSettings, camera: CameraState, msg: Any, estimator: Any,
               listeners: Dict[str, int]) -> Intake:
    """Check and decode ``camera``'s frame ``msg`` (Image or CompressedImage); raises :class:`Rejected`. The
    camera's stamp order advances only for a frame that is taken."""
    stamp = stamp_ns(msg.header.stamp)
    notes = []
    order = camera.order.check(stamp)
    if order == "reject":
        raise Rejected("image", "stamp_backwards", f"stamp {format_ns(stamp)} is older than the last "
                       f"processed frame's {format_ns(camera.order.last)} (frames out of order)")
    if order == "reset":
        notes.append((f"time_reset_{camera.name}", f"time jumped back {(camera.order.last - stamp) / 1e9:.1f} s (a "
                      "recording looping or a simulator restarting?): taking it as a new start", "info"))
    try:
        rgb = decoding.any_image_to_rgb(msg)
        if min(rgb.shape[:2]) < MIN_SIDE:
            raise decoding.InputRejected("image_too_small", f"{rgb.shape[1]}x{rgb.shape[0]} image: at least "
                                         f"{MIN_SIDE} px on each side are needed")
    except decoding.InputRejected as error:
        raise Rejected("image", error.reason, str(error)) from None
    height, width = rgb.shape[:2]
    info, exact = camera.pair_info(msg.header.stamp)
    if not exact:
        camera.stats.count("camera_info_unmatched")
        notes.append((f"info_stamp_{camera.name}", "no camera_info with the image's stamp; using the latest one "
                      f"(image {format_ns(stamp)}, info "
                      f"{format_ns(stamp_ns(info.header.stamp))})", "warn"))
    if info is not None:
        try:
            decoding.check_camera_info(info)
            if (info.width, info.height) != (width, height):
                raise decoding.InputRejected("info_size_mismatch", f"camera_info is {info.width}x{info.height} "
                                             f"but the image is {width}x{height}")
        except decoding.InputRejected as error:
            raise Rejected("camera_info", error.reason, str(error)) from None
    camera.order.processed(stamp)
    scale = 1.0
    if settings.focal_scale_transfer and info is None:
        notes.append((f"no_info_{camera.name}", "no camera_info received: publishing depth without focal-length "
                      "scale transfer, and no point clouds or scan", "warn"))
    elif settings.focal_scale_transfer:
        scale = estimator.focal_scale(decoding.intrinsics(info)[0], width)
    size = output_size(settings, estimator.model.preprocessing.output_size, height, width)
    model = CameraModel.from_info(info) if info is not None else None
    return Intake(FrameRequest(rgb, size, scale, model, wanted_outputs(settings, listeners), stamp), info, notes)
