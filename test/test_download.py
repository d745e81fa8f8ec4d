"""The one download of a batch's outputs (space_clip_ros.node.frame_pipeline.transfer): packed as bytes on the
device, copied once, cut into arrays on the host. Run here on CPU tensors through the same function a GPU's
download calls, at the sizes robots have, with every output on: each part must start where a view of its dtype
is allowed (a float32 after a 1242x375 colour image, 1,397,250 bytes, did not)."""

import numpy as np
import pytest
import torch
from helpers import node_aligner, node_fusion
from ros_harness import camera_info_msg
from test_sync_free_frame_path import EVERYTHING, _lidar, cloud

from space_clip_ros.node import frame_pipeline
from space_clip_ros.node.frame_pipeline import CameraModel, FramePipeline, FrameRequest, remember, transfer
from space_clip_ros.node.settings import NodeSettings
from space_clip_ros.synthetic import render_scene

#: (height, width): KITTI's download, its odd neighbour, VGA, 720p, 1080p.
SIZES = [(375, 1242), (374, 1241), (480, 640), (720, 1280), (1080, 1920)]


@pytest.fixture(scope="module")
def pipeline(checkpoint):
    from space_clip_ros import DepthEstimator

    return FramePipeline(DepthEstimator(str(checkpoint), device="cpu", backend="eager"))


def _request(size, seed):
    """A frame of ``size`` with every output, alignment to a lidar-like cloud and fusion."""
    height, width = size
    k = (0.58 * width, 0.58 * width, (width - 1) / 2, (height - 1) / 2)
    rgb, depth = render_scene(size, k)
    model = CameraModel.from_info(camera_info_msg(None, width, height, *k))
    buffer, valid, _ = _lidar(depth, share=0.05, seed=seed, k=k)
    return FrameRequest(rgb, size, 1.0, model, EVERYTHING, stamp_ns=100_000_000, aligner=node_aligner(min_points=10),
                        reference=cloud(buffer, valid), fusion=node_fusion(max_frames=4), pose=np.eye(4))


def _staged(pipeline, frames):
    settings = NodeSettings.from_values({"scan_height": 3, "temporal_filter": "odom", "points_rgb": True})
    with torch.inference_mode():
        raw = pipeline.estimator.predict_tensor([f.rgb for f in frames], [f.size for f in frames],
                                                [f.scale for f in frames])
        pipeline.upload(frames, settings)
        staged = pipeline.stage(frames, [f.model for f in frames], raw, settings)
        remember(frames, [f.model for f in frames])
    return [tensors for tensors, _ in staged]


def _check(batches):
    tensors = [t for frame in batches for name, t in frame.items() if not name.startswith("_")]
    offsets, total = frame_pipeline.pack_offsets(tensors)
    assert all(offset % frame_pipeline.PACK_ALIGN == 0 for offset in offsets)
    assert total >= sum(t.numel() * t.element_size() for t in tensors)
    arrays = transfer(tensors)
    for tensor, array in zip(tensors, arrays, strict=True):
        assert array.dtype == tensor.numpy().dtype and array.shape == tuple(tensor.shape)
        np.testing.assert_array_equal(array, tensor.numpy())
    return {t.dtype for t in tensors}


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for h, w in SIZES])
def test_every_output_of_a_frame_comes_down_whole_at_robot_sizes(pipeline, size):
    [tensors] = _staged(pipeline, [_request(size, 0)])
    assert {"depth", "alignment", "colored", "points", "scan", "points_filtered", "confidence"} <= set(tensors)
    dtypes = _check([tensors])
    assert {torch.uint8, torch.float32, torch.float64} <= dtypes  # colour, depth and clouds, the alignment's numbers


def test_a_batch_of_mixed_sizes_comes_down_in_one_transfer(pipeline):
    batches = []
    for i, size in enumerate(SIZES[:3]):  # the node batches frames of one size together; a transfer takes them all
        batches += _staged(pipeline, [_request(size, i)])
    _check(batches)


def test_the_packed_layout_keeps_every_dtype_aligned():
    """Odd byte counts of every dtype, one after another: a part of any dtype starts on a 16-byte boundary."""
    tensors = [torch.arange(n, dtype=dtype) for n, dtype in
               [(1397250, torch.uint8), (3, torch.float32), (7, torch.int64), (1, torch.float64), (0, torch.float32),
                (9, torch.int16)]]
    tensors.append(torch.tensor([True, False, True]))
    tensors.append(torch.tensor(2.5, dtype=torch.float64))  # a 0-d tensor
    arrays = transfer(tensors)
    for tensor, array in zip(tensors, arrays, strict=True):
        np.testing.assert_array_equal(array, tensor.numpy())
