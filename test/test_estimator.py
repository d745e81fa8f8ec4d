"""DepthEstimator: images of any size in, float32 metres out, with errors a user can act on."""

import numpy as np
import pytest
from helpers import tiny_model

from space_clip_ros import DepthEstimator, save_checkpoint
from space_clip_ros.model import CLIP_MEAN, CLIP_STD
from space_clip_ros.synthetic import KITTI_K, KITTI_SIZE


@pytest.fixture(scope="module")
def estimator(clip_tower):
    return DepthEstimator(tiny_model(clip_tower), device="cpu")


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (375, 1242), (480, 640), (64, 64)])
def test_depth_has_the_input_size_and_is_metric_float32(estimator, size):
    depth = estimator(_image(*size))
    assert depth.shape == size and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth >= 0).all() and depth.max() > 0


def test_batches_of_mixed_sizes_equal_single_calls(estimator):
    images = [_image(30, 50, 1), _image(30, 50, 2), _image(99, 41, 3)]
    batched = estimator(images)
    for image, depth in zip(images, batched, strict=True):
        np.testing.assert_allclose(depth, estimator(image), rtol=1e-5, atol=1e-5)
    same = estimator(images[:2])
    np.testing.assert_allclose(same[1], batched[1], rtol=1e-5, atol=1e-5)


def test_requested_output_size(estimator):
    assert estimator(_image(37, 51), output_size=(10, 20)).shape == (10, 20)
    assert [d.shape for d in estimator([_image(5, 6), _image(7, 8)], output_size=(4, 4))] == [(4, 4), (4, 4)]


def test_preprocessing_is_rgb_in_unit_range_with_clip_statistics(estimator):
    colour = np.array([200, 100, 30], dtype=np.uint8)
    pixels = estimator.preprocess([np.broadcast_to(colour, (120, 90, 3)).copy()])
    assert pixels.shape == (1, 3, 64, 64)
    expected = (colour / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    np.testing.assert_allclose(pixels[0].mean(dim=(1, 2)).numpy(), expected, rtol=1e-5)
    assert float(pixels.std(dim=(2, 3)).max()) < 1e-5


def test_focal_length_scale_transfer(estimator):
    image = _image(100, 200)
    plain = estimator(image)
    # KITTI: fx/width = 721.5377/1242. A camera with half that ratio sees things twice as large: depth halves.
    ratio = KITTI_K[0] / KITTI_SIZE[1]
    np.testing.assert_allclose(estimator(image, fx=ratio * 200 / 2), plain / 2, rtol=1e-5)
    assert estimator.focal_scale(KITTI_K[0], KITTI_SIZE[1]) == pytest.approx(1.0)
    scaled = estimator([image, image], fx=[ratio * 200, ratio * 400])
    np.testing.assert_allclose(scaled[1], plain * 2, rtol=1e-5)
    with pytest.raises(ValueError, match="2 focal lengths for 1 images|got 2 focal lengths"):
        estimator([image], fx=[1.0, 2.0])
    with pytest.raises(ValueError, match="fx > 0"):
        estimator(image, fx=0.0)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10, 3), np.float32), "dtype uint8"),
    (np.zeros((10, 10), np.uint8), r"HxWx3 RGB, got shape \(10, 10\).*grey"),
    (np.zeros((10, 10, 4), np.uint8), "RGBA"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "numpy array"),
    ([], "no images"),
])
def test_bad_inputs_get_clear_errors(estimator, bad, match):
    with pytest.raises(ValueError, match=match):
        estimator(bad)


def test_bad_output_size(estimator):
    with pytest.raises(ValueError, match="output_size"):
        estimator(_image(5, 5), output_size=(0, 3))
    with pytest.raises(ValueError, match="output_size"):
        estimator(_image(5, 5), output_size="big")


def test_bf16_on_cpu_and_fp16_refused(clip_tower):
    model = tiny_model(clip_tower)
    reference = DepthEstimator(model, device="cpu")(_image(40, 60))
    bf16 = DepthEstimator(tiny_model(clip_tower), device="cpu", precision="bf16")
    depth = bf16(_image(40, 60))
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, reference, rtol=0.1)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        DepthEstimator(tiny_model(clip_tower), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        DepthEstimator(tiny_model(clip_tower), device="cpu", precision="int8")


def test_loads_a_checkpoint_path(clip_tower, tmp_path):
    model = tiny_model(clip_tower)
    path = save_checkpoint(model, tmp_path / "m.pt", provenance={"trained": True})
    estimator = DepthEstimator(path, device="cpu")
    assert estimator.trained
    np.testing.assert_allclose(estimator(_image(20, 30)), DepthEstimator(model, device="cpu")(_image(20, 30)))


def test_cli_writes_depth_for_an_image_file(clip_tower, tmp_path):
    import cv2

    from space_clip_ros.cli import main

    path = save_checkpoint(tiny_model(clip_tower), tmp_path / "m.pt", provenance={"trained": True})
    cv2.imwrite(str(tmp_path / "frame.png"), _image(48, 80))
    assert main([str(tmp_path / "frame.png"), "--checkpoint", str(path), "--out", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    depth = np.load(tmp_path / "out" / "frame_depth.npy")
    assert depth.shape == (48, 80)
    assert cv2.imread(str(tmp_path / "out" / "frame_depth.png")).shape == (96, 80, 3)
    assert main([str(tmp_path / "missing.png"), "--checkpoint", str(path), "--out", str(tmp_path / "o2")]) == 2
    assert main(["--checkpoint", str(tmp_path / "nope.pt")]) == 2


def test_untrained_demo_is_labelled(tmp_path, capsys):
    from space_clip_ros.cli import main

    assert main(["--untrained", "--out", str(tmp_path), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.err and "UNTRAINED" in captured.out
    assert (tmp_path / "synthetic_street_depth_untrained.npy").exists()


def test_deployment_preprocessing_matches_the_training_path_on_real_frames(clip_tower):
    """The KITTI sample frames prepared by DepthEstimator and by train/'s evaluation path (PIL bicubic to 352x704,
    then to the tower's size) differ by at most one 8-bit level; a single direct resize would not."""
    import glob
    from pathlib import Path

    import torch
    from PIL import Image
    from space_clip_train.data import eval_input, pil_resize

    from space_clip_ros.inference import to_pixel_values

    estimator = DepthEstimator(tiny_model(clip_tower), device="cpu", backend="eager")
    prep = estimator.model.preprocessing
    std = np.array(prep.std, np.float32).reshape(3, 1, 1)
    level = 1.0 / 255.0 / std  # one 8-bit level in normalised units, per channel
    root = Path(__file__).resolve().parents[1] / "space_clip_ros" / "data" / "kitti_sample"
    frames = sorted(glob.glob(str(root / "*" / "*" / "image_02" / "data" / "*.png")))
    assert len(frames) == 3
    for path in frames:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        training = eval_input(pil_resize(rgb, (352, 704), "bicubic"), prep.input_size, prep.mean, prep.std)
        deployed = estimator.preprocess([rgb])[0].numpy()  # the tiny tower's 64x64
        diff = np.abs(deployed - training) / level
        assert diff.max() <= 1.0 + 1e-3 and diff.mean() < 0.05, (path, diff.max(), diff.mean())
        # At ViT-B/16's 224x224, through the same pipeline function the backends use.
        mean_t, std_t = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
        frame = torch.from_numpy(rgb.copy())[None]
        training = eval_input(pil_resize(rgb, (352, 704), "bicubic"), (224, 224), prep.mean, prep.std)
        deployed = to_pixel_values(frame, (224, 224), mean_t, std_t, torch.float32, via=(352, 704))[0].numpy()
        diff = np.abs(deployed - training) / level
        assert diff.max() <= 1.0 + 1e-3 and diff.mean() < 0.05, (path, diff.max(), diff.mean())
        direct = to_pixel_values(frame, (224, 224), mean_t, std_t, torch.float32)[0].numpy()
        assert (np.abs(direct - training) / level).max() > 2.5  # a direct resize: the bound is a real constraint
