"""A CPU that keeps the GPU's rules: the model and the whole path after it on torch's ``meta`` device, which has
shapes and dtypes but no data. What a GPU would trip over and a CPU run hides fails here: a tensor left on the CPU
and mixed into the device's ops (a CPU scalar tensor would also be frozen into a CUDA graph at capture), a value
read on the host (meta has none to read), a shape made from data. Robot sizes, every output, alignment and fusion,
a batch of mixed sizes; the model through the eager backend and through the static-shape programs the ``cudagraph``
backend captures (everything up to the capture itself)."""

import numpy as np
import pytest
import torch
from helpers import node_aligner, node_fusion, tiny_model
from ros_harness import camera_info_msg
from test_download import SIZES
from test_sync_free_frame_path import EVERYTHING, _lidar, cloud
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from space_clip_ros import DepthEstimator
from space_clip_ros.inference import EagerBackend, StaticShapeBackend
from space_clip_ros.node.frame_pipeline import CameraModel, FramePipeline, FrameRequest, remember
from space_clip_ros.node.settings import NodeSettings
from space_clip_ros.synthetic import render_scene

META = torch.device("meta")
aten = torch.ops.aten
#: Ops that move a tensor between host and device (an upload where the path allows one).
TRANSFERS = {aten.copy_.default, aten._to_copy.default, aten.lift_fresh.default, aten.lift_fresh_copy.default}
#: Host ops that only wrap host data as a tensor on its way up (torch.tensor, torch.from_numpy).
MADE_FROM_HOST = {"aten.lift_fresh.default", "aten.lift_fresh_copy.default", "aten.detach_.default"}


class HostTensorGuard(TorchDispatchMode):
    """Records every op that touches a CPU tensor: ``mixed`` (a CPU tensor among a meta op's tensors, other than a
    transfer), ``uploads`` (transfers from the CPU) and ``host`` (ops on CPU tensors alone: work on the host)."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed, self.uploads, self.host = [], [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        devices = {t.device.type for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)}
        if "cpu" in devices and "meta" in devices:
            (self.uploads if func in TRANSFERS or func.overloadpacket is aten.to else self.mixed).append(str(func))
        elif devices == {"cpu"}:
            self.host.append(str(func))
        return out


def _estimator(clip_tower, backend_class):
    model = tiny_model(clip_tower)
    estimator = DepthEstimator(model, device="cpu", backend="eager")
    estimator.backend = backend_class(model, META, torch.float32)  # the backend's own code, on the meta device
    estimator.device = META
    return estimator


def _frames(sizes, cameras, stamp):
    frames = []
    for size, (aligner, fusion) in zip(sizes, cameras, strict=True):
        height, width = size
        k = (0.58 * width, 0.58 * width, (width - 1) / 2, (height - 1) / 2)
        rgb, depth = render_scene(size, k)
        buffer, valid, _ = _lidar(depth, share=0.05, k=k)
        model = CameraModel.from_info(camera_info_msg(None, width, height, *k))
        frames.append(FrameRequest(rgb, size, 1.0, model, EVERYTHING, stamp_ns=stamp, aligner=aligner,
                                   reference=cloud(buffer, valid, META), fusion=fusion, pose=np.eye(4)))
    return frames


def _run_on_meta(pipeline, sizes, frames_each=3):
    settings = NodeSettings.from_values({"scan_height": 3, "temporal_filter": "odom", "points_rgb": True,
                                         "scan_min_confidence": 0.2, "points_filtered_min_confidence": 0.2})
    cameras = [(node_aligner(min_points=10), node_fusion(max_frames=4)) for _ in sizes]
    for i in range(frames_each):  # the first frame makes the cameras' constants, the next ones carry the fusion
        frames = _frames(sizes, cameras, (i + 1) * 100_000_000)
        models = [f.model.resized(f.size[1], f.size[0]) for f in frames]
        with torch.inference_mode():
            with HostTensorGuard() as forward:
                raw = pipeline.estimator.predict_tensor([f.rgb for f in frames], [f.size for f in frames],
                                                        [f.scale for f in frames])
            pipeline.upload(frames, settings)
            with HostTensorGuard() as path:
                staged = pipeline.stage(frames, models, raw, settings)
            remember(frames, models)
        assert forward.mixed == [] and path.mixed == [], (forward.mixed, path.mixed)
        assert forward.uploads, "the frames go up to the device"
        assert set(forward.host + path.host) <= MADE_FROM_HOST, (forward.host, path.host)  # no work on the host
        if i:  # nothing comes from the host once the cameras' constants exist
            assert path.uploads == [] and path.host == [], (path.uploads, path.host)
        for (tensors, problems), size in zip(staged, sizes, strict=True):
            assert problems == {}
            assert {"depth", "alignment", "colored", "points", "scan", "points_filtered", "confidence"} <= set(tensors)
            for name, value in tensors.items():
                for tensor in tree_flatten(value)[0]:
                    if isinstance(tensor, torch.Tensor):
                        assert tensor.device == META, name
            assert tuple(tensors["depth"].shape) == size


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for h, w in SIZES])
def test_the_model_and_the_path_stay_on_the_device_at_robot_sizes(clip_tower, size):
    _run_on_meta(FramePipeline(_estimator(clip_tower, StaticShapeBackend)), [size])


def test_a_batch_of_mixed_sizes_through_both_backends_stays_on_the_device(clip_tower):
    for backend_class in (StaticShapeBackend, EagerBackend):
        _run_on_meta(FramePipeline(_estimator(clip_tower, backend_class)), SIZES[:3] + [SIZES[0]], frames_each=2)


def test_the_guard_sees_a_cpu_tensor_mixed_into_device_ops():
    depth = torch.zeros(4, 5, device=META)
    with HostTensorGuard() as guard:
        depth * torch.tensor(2.0)  # a 0-d CPU tensor: allowed by torch on a GPU, frozen in a CUDA graph
        torch.where(depth > 0, depth, torch.zeros(()))
    assert guard.mixed == ["aten.mul.Tensor", "aten.where.self"]
    with pytest.raises((NotImplementedError, RuntimeError)):
        depth.sum().item()  # a host read: meta has no value to give
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.nonzero(depth)  # a shape from data
