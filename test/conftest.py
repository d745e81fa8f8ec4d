"""Shared fixtures: tiny random vision towers saved with save_pretrained and loaded back by path (no downloads)."""

import os
import tempfile
from pathlib import Path

import pytest

# Nothing in the tests may reach a hub; an attempt must fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# ONNX exports of the CPU backends are cached in a folder of this run, not in the user's ~/.cache.
os.environ.setdefault("SPACE_CLIP_ROS_CACHE", tempfile.mkdtemp(prefix="space_clip_test_cache_"))
# One torch inductor cache for the whole run (a graph compiled by one test is a cache hit for the next), never the
# user's; benchmarks/device_check.py sets one folder for its tests and benchmarks together.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="space_clip_test_inductor_"))

from helpers import TINY_CHANNELS, make_tiny_config, save_tiny_tower  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _full_precision_on_cuda():
    """CUDA results are compared with the CPU's and with each other: no TF32 (on by default for convolutions, it
    rounds to 10 bits of mantissa and would drown a real difference in noise)."""
    import torch

    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="session")
def clip_tower(tmp_path_factory) -> Path:
    """A 12-block, 32-wide CLIP vision tower for 64x64 inputs (4x4 patch grid), saved to a folder."""
    return save_tiny_tower(tmp_path_factory.mktemp("clip_tower"), kind="clip")


@pytest.fixture(scope="session")
def siglip_tower(tmp_path_factory) -> Path:
    return save_tiny_tower(tmp_path_factory.mktemp("siglip_tower"), kind="siglip")


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    """rclpy initialised in this process on a per-run ROS_DOMAIN_ID, localhost only, logs in tmp; yields the
    environment for node processes the test starts."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy not installed: pip install -e '.[ros]'")
    from ros_harness import ros_environment

    env = ros_environment(tmp_path_factory.mktemp("ros"))
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    rclpy.init()
    yield env
    rclpy.try_shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def checkpoint(clip_tower, tmp_path_factory):
    """A tiny trained-marked checkpoint for node processes."""
    from helpers import tiny_model

    from space_clip_ros.checkpoint import save_checkpoint

    return save_checkpoint(tiny_model(clip_tower), tmp_path_factory.mktemp("ckpt") / "tiny.pt",
                           provenance={"trained": True, "source": "test"})


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """A small KITTI tree (raw drives with calib and Velodyne scans, annotated depth, lists): 4 training frames of
    drive 1, 3 test frames of drive 2."""
    from kitti_tree import write_tree

    return write_tree(tmp_path_factory.mktemp("kitti"), drives={1: 4, 2: 3}, test_drive=2)


@pytest.fixture
def tiny_config(clip_tower):
    return make_tiny_config(clip_tower)


__all__ = ["TINY_CHANNELS"]
