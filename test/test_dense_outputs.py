"""The node's outputs computed as tensors equal the numpy reference functions (geometry, colormaps) exactly."""

import numpy as np
import pytest
import torch
from oracles import colorize_depth, depth_to_points, organized_cloud_bytes

from space_clip_ros.colormaps import COLORMAPS
from space_clip_ros.dense_outputs import cloud_buffer, colorize, mask_range, resize_rgb
from space_clip_ros.synthetic import KITTI_K


def _depth(seed=0, shape=(37, 53)):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.05, 90.0, shape).astype(np.float32)
    depth[0, :5] = np.nan
    depth[1, :3] = np.inf
    depth[2, :2] = 0.0
    depth[3, :2] = -1.0
    return depth


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("with_rgb", [False, True])
def test_cloud_buffer_is_byte_identical_to_the_numpy_cloud(stride, with_rgb):
    depth = _depth(stride)
    rgb = np.random.default_rng(9).integers(0, 256, depth.shape + (3,), dtype=np.uint8)
    colour = rgb[::stride, ::stride] if with_rgb else None
    fx, fy, cx, cy = KITTI_K[0], KITTI_K[1], 26.3, 17.9
    expected, step = organized_cloud_bytes(depth_to_points(depth, fx, fy, cx, cy, stride), colour)
    got = cloud_buffer(torch.from_numpy(depth), fx, fy, cx, cy, stride,
                       torch.from_numpy(np.ascontiguousarray(colour)) if with_rgb else None)
    assert got.shape[-1] * 4 == step
    assert got.numpy().tobytes() == expected


def test_cloud_buffer_errors():
    depth = torch.ones(4, 4)
    with pytest.raises(ValueError, match="fx > 0"):
        cloud_buffer(depth, 0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        cloud_buffer(depth, 1.0, 1.0, 0.0, 0.0, stride=0)
    with pytest.raises(ValueError, match="colour is"):
        cloud_buffer(depth, 1.0, 1.0, 0.0, 0.0, rgb=torch.zeros(3, 3, 3, dtype=torch.uint8))


@pytest.mark.parametrize("colormap", COLORMAPS)
def test_colorize_equals_colorize_depth(colormap):
    depth = _depth(4)
    expected = colorize_depth(depth, 1.0, 50.0, colormap)
    np.testing.assert_array_equal(colorize(torch.from_numpy(depth), 1.0, 50.0, colormap).numpy(), expected)
    with pytest.raises(ValueError, match="colormap must be one of"):
        colorize(torch.from_numpy(depth), 1.0, 50.0, "nope")


def test_mask_range_sets_nan_outside():
    depth = torch.tensor([0.05, 0.1, 5.0, 80.0, 80.5, float("nan")])
    out = mask_range(depth.clone(), 0.1, 80.0).numpy()
    np.testing.assert_array_equal(np.isnan(out), [True, False, False, False, True, True])


def test_resize_rgb_matches_opencv_area_for_integer_factors():
    import cv2

    rgb = np.random.default_rng(2).integers(0, 256, (48, 160, 3), dtype=np.uint8)
    expected = cv2.resize(rgb, (80, 24), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(resize_rgb(torch.from_numpy(rgb), (24, 80)).numpy(), expected)
    assert resize_rgb(torch.from_numpy(rgb), (48, 160)).shape == (48, 160, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/device_check.sh)")
def test_outputs_on_cuda_equal_the_cpu_ones():
    depth = _depth(7)
    rgb = np.random.default_rng(8).integers(0, 256, depth.shape + (3,), dtype=np.uint8)
    cpu, cuda = torch.from_numpy(depth), torch.from_numpy(depth).cuda()
    expected = cloud_buffer(cpu, 500.0, 500.0, 20.0, 15.0, 2, torch.from_numpy(rgb[::2, ::2].copy()))
    got = cloud_buffer(cuda, 500.0, 500.0, 20.0, 15.0, 2, torch.from_numpy(rgb[::2, ::2].copy()).cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(colorize(cuda, 1.0, 50.0).cpu().numpy(), colorize(cpu, 1.0, 50.0).numpy())
    np.testing.assert_array_equal(np.isnan(mask_range(cuda.clone(), 1.0, 50.0).cpu().numpy()),
                                  np.isnan(mask_range(cpu.clone(), 1.0, 50.0).numpy()))
