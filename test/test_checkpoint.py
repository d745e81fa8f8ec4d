"""The project checkpoint: round trips, weights_only loading, and errors that say what to do."""

import pytest
import torch
from helpers import tiny_model

from space_clip_ros import CheckpointError, load_checkpoint, save_checkpoint
from space_clip_ros.checkpoint import FORMAT_VERSION, checkpoint_dict, read_checkpoint
from space_clip_ros.model import KITTI_CAMERA, BackboneUnavailableError, TrainingCamera


def _pixels():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("embed", [True, False])
def test_round_trip_gives_identical_outputs(clip_tower, tmp_path, embed):
    model = tiny_model(clip_tower, use_aux_heads=True)
    path = save_checkpoint(model, tmp_path / "model.pt", embed_backbone=embed, provenance={"note": "test"})
    raw = torch.load(path, weights_only=True)
    assert raw["backbone"]["embedded"] is embed
    assert (raw["backbone"]["state_dict"] is not None) is embed
    loaded = load_checkpoint(path)
    assert not loaded.training and not loaded.decoder.training
    assert loaded.config == model.config
    assert loaded.provenance["note"] == "test" and "created" in loaded.provenance
    assert loaded.preprocessing == model.preprocessing
    assert loaded.training_camera == KITTI_CAMERA
    pixels = _pixels()
    torch.testing.assert_close(loaded(pixels, output_size=(50, 90)), model(pixels, output_size=(50, 90)),
                               rtol=0, atol=0)
    depth, aux = loaded(pixels, return_aux=True)
    assert len(aux) == 3


def test_embedded_backbone_needs_no_tower_folder(clip_tower, tmp_path):
    import shutil

    tower = tmp_path / "tower"
    shutil.copytree(clip_tower, tower)
    model = tiny_model(tower)
    path = save_checkpoint(model, tmp_path / "model.pt")  # a local folder: embedded by default
    shutil.rmtree(tower)
    torch.testing.assert_close(load_checkpoint(path)(_pixels()), model(_pixels()), rtol=0, atol=0)


def test_referenced_backbone_missing_says_how_to_get_it(clip_tower, tmp_path):
    model = tiny_model(clip_tower)
    ckpt = checkpoint_dict(model, embed_backbone=False)
    ckpt["backbone"]["source"] = "openai/clip-vit-base-patch16"
    torch.save(ckpt, tmp_path / "hub.pt")
    with pytest.raises(BackboneUnavailableError) as info:
        load_checkpoint(tmp_path / "hub.pt")
    assert "openai/clip-vit-base-patch16" in str(info.value) and "backbone=" in str(info.value)
    # ...and a local copy given as an override is used instead.
    torch.testing.assert_close(load_checkpoint(tmp_path / "hub.pt", backbone=str(clip_tower))(_pixels()),
                               model(_pixels()))


def test_training_camera_and_preprocessing_travel_with_the_file(clip_tower, tmp_path):
    model = tiny_model(clip_tower)
    model.training_camera = TrainingCamera(fx=500.0, width=640)
    model.preprocessing.output_size = (240, 320)
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    assert loaded.training_camera.scale_for(250.0, 640) == pytest.approx(0.5)
    assert loaded.preprocessing.output_size == (240, 320)


def test_save_is_atomic_and_leaves_no_temporary_files(clip_tower, tmp_path):
    model = tiny_model(clip_tower)
    save_checkpoint(model, tmp_path / "m.pt")
    save_checkpoint(model, tmp_path / "m.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_errors_name_the_problem(clip_tower, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a space_clip_ros checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    model = tiny_model(clip_tower)
    official = {"model": {k: v for k, v in model.decoder.state_dict().items()}, "epoch": 3}
    torch.save(official, tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match="space-clip-convert"):
        load_checkpoint(tmp_path / "official.pt")

    good = checkpoint_dict(model)
    torch.save({**good, "format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="Upgrade space_clip_ros"):
        load_checkpoint(tmp_path / "future.pt")
    bad_decoder = dict(good["decoder"])
    bad_decoder.pop("depth_prediction_head.3.bias")
    bad_decoder["main_path_projections.0.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save({**good, "decoder": bad_decoder}, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match=r"missing depth_prediction_head.3.bias.*shape mismatch "
                                              r"main_path_projections.0.weight \(3, 3, 1, 1\) vs \(16, 32, 1, 1\)"):
        load_checkpoint(tmp_path / "mismatch.pt")
    torch.save({**good, "model_config": {**good["model_config"], "decoder_channels": [8]}}, tmp_path / "cfg.pt")
    with pytest.raises(CheckpointError, match="model_config is invalid"):
        load_checkpoint(tmp_path / "cfg.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "cfg.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated)


class Payload:
    """Any class: weights_only loading must refuse to instantiate it."""


def test_unsafe_pickles_are_refused(tmp_path):
    torch.save({"format": "space_clip_ros.checkpoint", "x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "evil.pt")


def test_device_errors_are_clear(clip_tower, tmp_path):
    path = save_checkpoint(tiny_model(clip_tower), tmp_path / "m.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_checkpoint(path, device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        load_checkpoint(path, device="gpu0")
    assert load_checkpoint(path, device="auto").device.type in ("cpu", "cuda")
