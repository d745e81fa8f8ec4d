"""The depth node's frame path without ROS: decoded frames and their camera models in, every output as arrays out
(depth, colour, organized cloud, LaserScan ranges, filtered cloud, confidence). One batched forward of the model;
then per frame, on the model's device: scale alignment to the camera's range reference
(:mod:`space_clip_ros.alignment`), temporal fusion (:mod:`space_clip_ros.temporal`), confidence, and every output
from that depth, each downloaded once.

The node turns a :class:`FrameResult` into messages; tests call :meth:`FramePipeline.run` directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..alignment import ScaleAligner, ScaleFit, sparse
from ..dense_outputs import cloud_buffer, colorize, mask_range, resize_rgb
from ..geometry import camera_intrinsics, capacity_bucket, scale_intrinsics
from ..planner_outputs import ScanGeometry, filtered_points_static, laser_scan, scan_geometry, scan_rows
from ..temporal import TemporalFusion, confidence
from .frame_graphs import FrameGraphs, cuda_graph
from .reference import ReferenceCloud
from .settings import NodeSettings

#: Outputs beyond depth/image and depth/camera_info, computed only when asked for (someone subscribes).
OPTIONAL_OUTPUTS = ("colored", "points", "scan", "points_filtered", "confidence")
#: Rows of the filtered cloud downloaded at first (the node's defaults keep about 16k points of a 1242x375 frame);
#: a larger cloud comes in a second transfer once and the camera's buffer grows (FramePipeline._grow_buffers).
FILTERED_CAPACITY = 32768
#: Kept points (before the voxel grid) summed at first: the defaults keep ~100k of a 1242x375 street frame; a camera
#: that keeps more has that frame's cloud made again in full once and its capacity grows.
KEPT_CAPACITY = 131072


@dataclass(frozen=True)
class CameraModel:
    """A camera_info's calibration (ROS-free): size, K (9), P (12), D, R (9), distortion model."""

    width: int
    height: int
    k: Tuple[float, ...]
    p: Tuple[float, ...]
    d: Tuple[float, ...] = ()
    r: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    distortion_model: str = "plumb_bob"

    @classmethod
    def from_info(cls, info: Any) -> "CameraModel":
        """From a sensor_msgs/CameraInfo (or anything with its fields)."""
        return cls(int(info.width), int(info.height), tuple(float(v) for v in info.k),
                   tuple(float(v) for v in info.p), tuple(float(v) for v in info.d),
                   tuple(float(v) for v in info.r), str(info.distortion_model))

    @property
    def intrinsics(self) -> Tuple[float, float, float, float]:
        """(fx, fy, cx, cy) from P, or from K when P is unset."""
        return camera_intrinsics(self.k, self.p)

    def resized(self, width: int, height: int) -> "CameraModel":
        """The model of this camera's image resized to ``width`` x ``height`` (K and P rows scaled)."""
        if (width, height) == (self.width, self.height):
            return self
        k, p = scale_intrinsics(np.asarray(self.k), np.asarray(self.p), width / self.width, height / self.height)
        return CameraModel(int(width), int(height), tuple(k.ravel().tolist()), tuple(p.ravel().tolist()), self.d,
                           self.r, self.distortion_model)


@dataclass
class FrameRequest:
    """One decoded frame: ``rgb`` (H, W, 3) uint8, the output ``size`` (h, w), the focal-length ``scale`` of its
    camera, its camera ``model`` at the input size (None without camera_info: no cloud, scan or filtered cloud) and
    the optional outputs wanted (:data:`OPTIONAL_OUTPUTS`). With scale alignment: the camera's ``aligner`` and this
    frame's ``reference``: a :class:`~.reference.ReferenceCloud` (points and their move, projected in the path, as
    the node gives it), or a sparse depth at the output size ((flat pixel indices, depths), or an (H, W) array with
    0 = none); None with ``reference_reason``. With temporal fusion: the camera's ``fusion`` and its ``pose`` (4x4
    fixed <- optical frame at ``stamp_ns``, None without tf). ``prepare`` (optional) fills those in after the
    forward, so the tf of the image's moment has had the forward's time to arrive; ``motion``, ``stamp_t`` and
    ``rgb_device`` are what :meth:`FramePipeline.upload` puts on the device before the path."""

    rgb: np.ndarray
    size: Tuple[int, int]
    scale: float = 1.0
    model: Optional[CameraModel] = None
    wants: FrozenSet[str] = frozenset()
    stamp_ns: int = 0
    aligner: Optional[ScaleAligner] = None
    reference: Union[None, np.ndarray, Tuple[torch.Tensor, torch.Tensor], ReferenceCloud] = None
    reference_reason: str = ""
    fusion: Optional[TemporalFusion] = None
    pose: Optional[np.ndarray] = None
    motion: Optional[torch.Tensor] = None  # the fusion's motion_to(pose), uploaded before the frame's path
    stamp_t: Optional[torch.Tensor] = None  # stamp_ns as a 0-d int64 on the device, uploaded before the path
    rgb_device: Optional[torch.Tensor] = None  # the frame on the model's device (the cloud's colour)
    prepare: Optional[Callable[["FrameRequest", torch.device], None]] = None


@dataclass
class FrameResult:
    depth: np.ndarray  # (h, w) float32 metres, NaN outside [min_depth, max_depth]
    model: Optional[CameraModel]  # at the output size
    colored: Optional[np.ndarray] = None  # (h, w, 3) uint8
    points: Optional[np.ndarray] = None  # (h', w', 4 | 8) float32 PointCloud2 rows
    scan: Optional[np.ndarray] = None  # (w,) float32 ranges
    scan_geometry: Optional[ScanGeometry] = None
    points_filtered: Optional[np.ndarray] = None  # (N, 3) float32
    confidence: Optional[np.ndarray] = None  # (h, w) float32 0..1
    alignment: Optional[ScaleFit] = None
    problems: Dict[str, str] = field(default_factory=dict)  # output -> why it was not computed


class FramePipeline:
    """The model and what the node makes of its depth. ``estimator``: a :class:`space_clip_ros.DepthEstimator`.
    ``graphs``: how the path after the model is replayed (:class:`~.frame_graphs.FrameGraphs`); by default CUDA
    graphs with the ``cudagraph`` backend (the model's own programs are graphs there too), else eager."""

    def __init__(self, estimator: Any, graphs: Optional[FrameGraphs] = None) -> None:
        self.estimator = estimator
        if graphs is None and getattr(estimator, "backend_name", "") == "cudagraph":
            graphs = FrameGraphs(cuda_graph(estimator.device))
        self.graphs = graphs
        self._scan_cache: Dict[Tuple, Tuple[ScanGeometry, torch.Tensor]] = {}
        self._filtered_capacity: Dict[Tuple[int, int], int] = {}  # output size -> rows downloaded
        self._kept_capacity: Dict[Tuple[int, int], int] = {}  # output size -> kept points summed

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> "FramePipeline":
        """The node's model from its parameters (checkpoint, or untrained_demo), on its device, precision and
        backend, warmed up. Raises ``ValueError`` saying what to set when there is no checkpoint."""
        from ..estimator import DepthEstimator

        if settings.untrained_demo:
            from ..model.untrained import build_untrained_model

            model = build_untrained_model()
        elif not settings.checkpoint:
            raise ValueError("no checkpoint: set -p checkpoint:=/path/to/space_clip.pt (a trained decoder; "
                             "see space-clip-convert), or -p untrained_demo:=true to run with random weights")
        else:
            model = settings.checkpoint
        # The node owns the model: an ONNX runtime backend's torch copy is freed once the runtime has it.
        estimator = DepthEstimator(model, device=settings.device, precision=settings.precision,
                                   backbone=settings.backbone or None, backend=settings.backend, release_weights=True)
        estimator.warmup()  # compile / allocate now, not on the first frame
        return cls(estimator)

    def _scan_geometry(self, model: CameraModel, scan_height: int) -> Tuple[ScanGeometry, torch.Tensor]:
        key = (model, int(scan_height))
        if key not in self._scan_cache:
            if len(self._scan_cache) > 32:
                self._scan_cache.clear()
            geometry = scan_geometry(model.width, model.height, model.k, model.p, int(scan_height), model.d, model.r,
                                     model.distortion_model)
            self._scan_cache[key] = (geometry, torch.from_numpy(geometry.index).to(self.estimator.device))
        return self._scan_cache[key]

    def run(self, frames: Sequence[FrameRequest], settings: NodeSettings) -> Tuple[List[FrameResult], float]:
        """Every frame's outputs, and the milliseconds from the forward's start to everything downloaded.

        Between the forward and the download nothing is read on the host and no shape depends on the data (the
        test of :mod:`space_clip_ros.sync_guard` holds it to that); everything the frames publish comes down in
        one transfer (:func:`download`)."""
        with torch.inference_mode():
            start = time.perf_counter()
            raw = self.estimator.predict_tensor([f.rgb for f in frames], [f.size for f in frames],
                                                [f.scale for f in frames])
            models = [f.model.resized(f.size[1], f.size[0]) if f.model is not None else None for f in frames]
            host, staged = self.after_forward(frames, models, raw, settings)
            results = [self._result(frame, model, tensors, problems, settings)
                       for frame, model, tensors, (_, problems) in zip(frames, models, host, staged, strict=True)]
            self._grow_buffers(frames, results, host, staged)
            inference_ms = (time.perf_counter() - start) * 1000.0
        return results, inference_ms

    def after_forward(self, frames: Sequence[FrameRequest], models: Sequence[Optional[CameraModel]],
                      raw: Sequence[torch.Tensor], settings: NodeSettings
                      ) -> Tuple[List[Dict[str, np.ndarray]], List[Tuple[Dict[str, torch.Tensor], Dict[str, str]]]]:
        """What :meth:`run` does with the model's depth ``raw``: the uploads, the path (replayed through
        :attr:`graphs` when there are any), the fusion's host part and the one download; (downloaded, staged)."""
        self.upload(frames, settings)
        if self.graphs is not None:
            staged = self.graphs.stage(self, frames, models, raw, settings)
        else:
            staged = self.stage(frames, models, raw, settings)
        remember(frames, models)
        return download([tensors for tensors, _ in staged]), staged

    def capacities(self, frames: Sequence[FrameRequest]) -> Tuple:
        """The filtered cloud's buffer sizes for the frames' output sizes (a program depends on them)."""
        sizes = sorted({tuple(frame.size) for frame in frames})
        return tuple((size, self._kept_capacity.get(size, KEPT_CAPACITY),
                      self._filtered_capacity.get(size, FILTERED_CAPACITY)) for size in sizes)

    def upload(self, frames: Sequence[FrameRequest], settings: NodeSettings) -> None:
        """What the frames' path needs from the host, on the model's device before it: each frame's ``prepare``
        (reference, pose), its fusion's motion, the frame itself for a coloured cloud."""
        device = self.estimator.device
        stamps = torch.tensor([frame.stamp_ns for frame in frames], dtype=torch.int64).to(device, non_blocking=True)
        for frame, stamp in zip(frames, stamps, strict=True):
            frame.stamp_t = stamp
            if frame.prepare is not None:
                frame.prepare(frame, device)
            if "points" in frame.wants and settings.points_rgb:
                frame.rgb_device = torch.from_numpy(frame.rgb).to(device, non_blocking=True)
            if frame.fusion is not None:
                frame.motion = frame.fusion.motion_to(frame.pose, frame.stamp_ns, device)

    def stage(self, frames: Sequence[FrameRequest], models: Sequence[Optional[CameraModel]],
              raw: Sequence[torch.Tensor], settings: NodeSettings
              ) -> List[Tuple[Dict[str, torch.Tensor], Dict[str, str]]]:
        """Every frame's outputs as tensors on the model's device, in static shapes ((name -> tensor, output ->
        why it was not computed) per frame): alignment, fusion, confidence, range mask, colour, clouds, scan."""
        refined = [self._refine(frame, model, depth_t, settings)
                   for frame, model, depth_t in zip(frames, models, raw, strict=True)]
        # The scan needs the depth beyond max_depth, so its rows are taken before the range mask.
        scan_inputs = [self._scan_input(frame, model, depth_t, settings, trust)
                       for frame, model, depth_t, (_, trust) in zip(frames, models, raw, refined, strict=True)]
        for depth_t, (_, trust) in zip(raw, refined, strict=True):
            mask_range(depth_t, settings.min_depth, settings.max_depth)
            if trust is not None:  # no confidence where nothing is published
                trust.masked_fill_(torch.isnan(depth_t), 0.0)
        return [self._outputs(settings, frame, model, depth_t, scan_input, stats, trust)
                for frame, model, depth_t, scan_input, (stats, trust)
                in zip(frames, models, raw, scan_inputs, refined, strict=True)]

    @staticmethod
    def _needs_confidence(frame: FrameRequest, settings: NodeSettings) -> bool:
        return ("confidence" in frame.wants or ("scan" in frame.wants and settings.scan_min_confidence > 0)
                or ("points_filtered" in frame.wants and settings.points_filtered_min_confidence > 0))

    def _refine(self, frame: FrameRequest, model: Optional[CameraModel], depth_t: torch.Tensor,
                settings: NodeSettings) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Scale alignment and temporal fusion of ``depth_t`` in place (before the range mask); (the alignment's
        numbers on the device, the confidence when some output needs it)."""
        stats = None
        if frame.aligner is not None:
            reference = frame.reference
            if isinstance(reference, np.ndarray):
                reference = sparse(reference)  # measured pixels only
            elif isinstance(reference, ReferenceCloud) and model is not None:  # projected here: in the captured path
                reference = reference.project(frame.size, model.intrinsics, settings.min_depth, settings.max_depth)
            stats = frame.aligner.align_static(depth_t, reference,
                                               frame.stamp_t if frame.stamp_t is not None else frame.stamp_ns)
        temporal = None
        if frame.fusion is not None and model is not None:
            temporal = frame.fusion.fuse_static(depth_t, model.intrinsics, frame.motion)
        trust = None
        if self._needs_confidence(frame, settings):
            trust = confidence(depth_t, temporal, settings.points_filtered_edge_threshold)
        return stats, trust

    def _scan_input(self, frame: FrameRequest, model: Optional[CameraModel], depth_t: torch.Tensor,
                    settings: NodeSettings, trust: Optional[torch.Tensor]):
        if "scan" not in frame.wants or model is None:
            return None
        try:
            geometry, index = self._scan_geometry(model, settings.scan_height)
        except ValueError as error:
            return str(error)
        rows = scan_rows(depth_t, geometry, settings.min_depth, settings.max_depth)
        if trust is not None and settings.scan_min_confidence > 0:  # untrusted pixels measure nothing
            low = trust[geometry.first_row:geometry.first_row + geometry.rows] < settings.scan_min_confidence
            rows = rows.masked_fill(low, float("nan"))
        return geometry, index, rows

    def _outputs(self, settings: NodeSettings, frame: FrameRequest, model: Optional[CameraModel],
                 depth_t: torch.Tensor, scan_input, stats: Optional[torch.Tensor] = None,
                 trust: Optional[torch.Tensor] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
        out_h, out_w = frame.size
        tensors: Dict[str, torch.Tensor] = {"depth": depth_t}
        problems: Dict[str, str] = {}
        wants = frame.wants
        if stats is not None:
            tensors["alignment"] = stats
        if "confidence" in wants and trust is not None:
            tensors["confidence"] = trust
        if "colored" in wants:
            tensors["colored"] = colorize(depth_t, settings.colored_min_depth, settings.colored_max_depth,
                                          settings.colormap)
        if model is None:
            for name in wants & {"points", "scan", "points_filtered"}:
                problems[name] = "no camera_info"
            return tensors, problems
        fx, fy, cx, cy = model.intrinsics
        if "points" in wants:
            stride = int(settings.points_stride)
            colour_t = None
            if settings.points_rgb:
                image = frame.rgb_device
                if image is None:
                    image = torch.from_numpy(frame.rgb).to(depth_t.device, non_blocking=True)
                colour_t = resize_rgb(image, (out_h, out_w))[::stride, ::stride]
            tensors["points"] = cloud_buffer(depth_t, fx, fy, cx, cy, stride, colour_t)
        if isinstance(scan_input, str):
            problems["scan"] = scan_input
        elif scan_input is not None:
            geometry, index, rows = scan_input
            tensors["scan"] = laser_scan(rows, geometry, settings.scan_range_min, settings.scan_range_max, index)
        if "points_filtered" in wants:
            if trust is not None and settings.points_filtered_min_confidence > 0:
                depth_t = depth_t.masked_fill(trust < settings.points_filtered_min_confidence, float("nan"))
            args = (depth_t, fx, fy, cx, cy, settings.points_filtered_min_range, settings.points_filtered_max_range,
                    settings.points_filtered_edge_threshold, settings.points_filtered_voxel,
                    int(settings.points_filtered_stride))
            kept, count = filtered_points_static(*args, capacity=self._kept_capacity.get(frame.size, KEPT_CAPACITY))
            capacity = min(self._filtered_capacity.get(frame.size, FILTERED_CAPACITY), kept.shape[0])
            tensors["points_filtered"], tensors["points_filtered_count"] = kept[:capacity], count.reshape(1)
            tensors["_points_filtered_all"] = kept  # not downloaded: read only when the capacity was too small
            tensors["_points_filtered_args"] = args  # type: ignore[assignment]  # for a second pass, never sent
        return tensors, problems

    def _result(self, frame: FrameRequest, model: Optional[CameraModel], host: Dict[str, np.ndarray],
                problems: Dict[str, str], settings: NodeSettings) -> FrameResult:
        result = FrameResult(depth=host["depth"], model=model, problems=dict(problems))
        if "alignment" in host:
            result.alignment = frame.aligner.resolve(torch.from_numpy(host["alignment"]), frame.reference_reason)
        result.confidence = host.get("confidence")
        result.colored = host.get("colored")
        result.points = host.get("points")
        if "scan" in host:
            result.scan = host["scan"]
            result.scan_geometry = self._scan_geometry(model, settings.scan_height)[0]
        if "points_filtered" in host:
            count = max(0, int(host["points_filtered_count"][0]))  # -1: too many kept points, see _grow_buffers
            result.points_filtered = host["points_filtered"][:count]
        return result

    def _grow_buffers(self, frames: Sequence[FrameRequest], results: List[FrameResult],
                      host: List[Dict[str, np.ndarray]], staged) -> None:
        """A filtered cloud larger than its buffers, rarely: more kept points than were summed (count -1) makes
        the frame's cloud again in full and doubles that capacity; more points than rows downloaded brings the
        rest in a second transfer and grows the rows to the next power of two above 1.5x the count. Either
        happens once per camera and size, and the result is the whole cloud."""
        for frame, result, got, (tensors, _) in zip(frames, results, host, staged, strict=True):
            args = tensors.get("_points_filtered_args")
            if "points_filtered" not in got:
                continue
            count = int(got["points_filtered_count"][0])
            if count < 0:  # more kept points than the capacity summed: this frame's cloud again, in full
                kept, full = filtered_points_static(*args)
                count = int(full)
                result.points_filtered = kept[:count].cpu().numpy()
                self._kept_capacity[frame.size] = 2 * self._kept_capacity.get(frame.size, KEPT_CAPACITY)
            elif count > got["points_filtered"].shape[0]:
                result.points_filtered = tensors["_points_filtered_all"][:count].cpu().numpy()
            if count > got["points_filtered"].shape[0]:
                self._filtered_capacity[frame.size] = capacity_bucket(int(count * 1.5), FILTERED_CAPACITY)


def remember(frames: Sequence[FrameRequest], models: Sequence[Optional[CameraModel]]) -> None:
    """The host's part of each frame's temporal fusion, once its device work is staged: the camera's pose and stamp
    and the model of the depth its fusion now holds."""
    for frame, model in zip(frames, models, strict=True):
        if frame.fusion is not None and model is not None:
            frame.fusion.remember(frame.size, model.intrinsics, frame.pose, frame.stamp_ns)  # float32 depth


def download(batches: Sequence[Dict[str, torch.Tensor]]) -> List[Dict[str, np.ndarray]]:
    """Every tensor of every frame (names starting with ``_`` left on the device) as numpy arrays, in one
    device-to-host transfer (:func:`transfer`). CPU tensors are returned as they are (no copy)."""
    wanted = [(i, name, t) for i, tensors in enumerate(batches) for name, t in tensors.items()
              if not name.startswith("_")]  # "_" names: kept for a second pass, never sent
    out: List[Dict[str, np.ndarray]] = [{} for _ in batches]
    on_device = [(i, name, t) for i, name, t in wanted if t.device.type != "cpu"]
    for i, name, t in wanted:
        if t.device.type == "cpu":
            out[i][name] = t.numpy()
    if on_device:
        for (i, name, _), array in zip(on_device, transfer([t for _, _, t in on_device]), strict=True):
            out[i][name] = array
    return out


#: Where each tensor starts in the packed bytes: a multiple of this (a host view of any dtype needs its offset to be
#: a multiple of the dtype's size; 16 also keeps every part on a vector boundary).
PACK_ALIGN = 16


def pack_offsets(tensors: Sequence[torch.Tensor]) -> Tuple[List[int], int]:
    """The byte offset of each tensor in the packed buffer (each a multiple of :data:`PACK_ALIGN`) and its size."""
    offsets, end = [], 0
    for tensor in tensors:
        start = -(-end // PACK_ALIGN) * PACK_ALIGN
        offsets.append(start)
        end = start + tensor.numel() * tensor.element_size()
    return offsets, end


def transfer(tensors: Sequence[torch.Tensor]) -> List[np.ndarray]:
    """``tensors`` (all on one device) as numpy arrays of their dtypes and shapes, in one copy: packed as bytes into
    one buffer on their device (one ``cat``, aligned by :func:`pack_offsets`), copied into host memory once (pinned
    on CUDA: the one wait for the device) and cut there. The GPU's download and the CPU tests run this same code."""
    if not tensors:
        return []
    device = tensors[0].device
    offsets, total = pack_offsets(tensors)
    parts: List[torch.Tensor] = []
    end = 0
    for tensor, offset in zip(tensors, offsets, strict=True):
        if offset > end:  # padding up to the aligned offset: uninitialised bytes, never read
            parts.append(torch.empty(offset - end, dtype=torch.uint8, device=device))
        flat = tensor.contiguous().reshape(-1).view(torch.uint8)
        parts.append(flat)
        end = offset + flat.numel()
    packed = torch.cat(parts) if len(parts) > 1 else parts[0]
    host = torch.empty(total, dtype=torch.uint8, pin_memory=device.type == "cuda")
    host.copy_(packed)  # the one transfer (and the one wait for the device)
    return [host[offset:offset + t.numel() * t.element_size()].view(t.dtype).reshape(t.shape).numpy()
            for t, offset in zip(tensors, offsets, strict=True)]
