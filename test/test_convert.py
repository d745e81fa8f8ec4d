"""space-clip-convert: the authors' train.py checkpoints into ours, reproducing their forward pass."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_CHANNELS, tiny_model
from reference_forward import reference_decoder

from space_clip_ros import CheckpointError, load_checkpoint
from space_clip_ros.checkpoint import read_checkpoint
from space_clip_ros.convert import convert, main


def _authors_yaml(folder, tower_name="tower", **changes):
    """A config in the authors' YAML vocabulary (configs/kitti.yaml), pointing at a tower beside it."""
    values = {
        "name": "SPACE_CLIP_KITTI", "dataset": "kitti", "clip_model_name": tower_name,
        "freeze_clip_vision": True, "clip_interpolate_pos_encoding": False,
        "main_path_indices": [12, 9, 6, 3], "structural_path_indices": [2, 1, 0], "film_param_hidden_dim": 16,
        "decoder_channels": list(TINY_CHANNELS), "decoder_dropout": 0.1, "use_film": True,
        "use_structural_pathway": True, "use_multiscale_supervision": True, "input_height": 352,
        "input_width": 704, "clip_input_size": 64, "epochs": 20, "learning_rate": 1e-4,
    }
    values.update(changes)
    path = folder / "kitti.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _authors_checkpoint(model, path, prefix="module.", nest_tower=False):
    """{"model": state_dict, "optimizer": ..., "epoch": n} with the authors' key layout."""
    state = {}
    for key, value in model.backbone.encoder.state_dict().items():
        state[f"{prefix}clip_vision_model.{'vision_model.' if nest_tower else ''}{key}"] = value
    for key, value in model.decoder.state_dict().items():
        state[prefix + key] = value
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 7}, path)
    return model.decoder.state_dict()


@pytest.fixture
def authors_release(clip_tower, tmp_path):
    shutil.copytree(clip_tower, tmp_path / "tower")
    model = tiny_model(tmp_path / "tower", use_aux_heads=True, seed=3)
    decoder_state = _authors_checkpoint(model, tmp_path / "best.pt")
    return tmp_path, model, decoder_state


@pytest.mark.parametrize("nest_tower", [False, True], ids=["transformers5-keys", "transformers4-keys"])
def test_converted_model_reproduces_the_authors_forward_pass(authors_release, nest_tower):
    folder, model, decoder_state = authors_release
    _authors_checkpoint(model, folder / "best.pt", nest_tower=nest_tower)
    out = convert(folder / "best.pt", _authors_yaml(folder), folder / "ours.pt")
    converted = load_checkpoint(out)
    assert converted.config.use_aux_heads and converted.provenance["trained"] is True
    assert converted.preprocessing.output_size == (352, 704) and converted.preprocessing.input_size == (64, 64)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    hidden, pooled = converted.backbone(pixels)
    expected = reference_decoder(decoder_state, hidden, pooled, output_size=(352, 704))
    torch.testing.assert_close(converted(pixels, output_size=(352, 704)), expected, rtol=1e-5, atol=1e-6)
    # The embedded tower is the checkpoint's, so the file stands alone.
    shutil.rmtree(folder / "tower")
    assert read_checkpoint(out)["backbone"]["embedded"] is True
    torch.testing.assert_close(load_checkpoint(out)(pixels), converted(pixels), rtol=0, atol=0)


def test_ablation_variant_without_structural_pathway_converts(clip_tower, tmp_path):
    shutil.copytree(clip_tower, tmp_path / "tower")
    model = tiny_model(tmp_path / "tower", use_structural_pathway=False, use_film=False)
    decoder_state = _authors_checkpoint(model, tmp_path / "best.pt", prefix="")
    yaml_path = _authors_yaml(tmp_path, use_structural_pathway=False, use_film=False,
                              use_multiscale_supervision=False)
    converted = load_checkpoint(convert(tmp_path / "best.pt", yaml_path, tmp_path / "ours.pt"))
    pixels = torch.randn(1, 3, 64, 64)
    hidden, pooled = converted.backbone(pixels)
    expected = reference_decoder(decoder_state, hidden, pooled, use_film=False, use_structural=False)
    torch.testing.assert_close(converted(pixels), expected, rtol=1e-5, atol=1e-6)


def test_hub_backbone_is_referenced_without_downloading(authors_release):
    folder, model, _ = authors_release
    yaml_path = _authors_yaml(folder, tower_name="openai/clip-vit-base-patch16")
    out = convert(folder / "best.pt", yaml_path, folder / "ours.pt")
    raw = read_checkpoint(out)
    assert raw["backbone"] == {"source": "openai/clip-vit-base-patch16", "type": "clip", "embedded": False,
                               "vision_config": None, "state_dict": None}
    pixels = torch.randn(1, 3, 64, 64)
    loaded = load_checkpoint(out, backbone=str(folder / "tower"))
    torch.testing.assert_close(loaded(pixels), model(pixels))


def test_mismatched_config_is_reported(authors_release):
    folder, _, _ = authors_release
    with pytest.raises(CheckpointError, match=r"missing .*structural_decoder_blocks.3.*\(18 in all\)"):
        convert(folder / "best.pt", _authors_yaml(folder, use_structural_pathway=True,
                                                  structural_path_indices=[2, 1, 0, 0]), folder / "x.pt")
    with pytest.raises(CheckpointError, match="unexpected aux_depth_heads"):
        convert(folder / "best.pt", _authors_yaml(folder, use_multiscale_supervision=False), folder / "x.pt")
    assert not (folder / "x.pt").exists()


def test_cli_reports_errors_and_writes_the_file(authors_release, capsys):
    folder, _, _ = authors_release
    yaml_path = _authors_yaml(folder)
    assert main([str(folder / "missing.pt"), "--config", str(yaml_path), "--out", str(folder / "o.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (folder / "junk.pt").write_bytes(b"\x00junk")
    assert main([str(folder / "junk.pt"), "--config", str(yaml_path), "--out", str(folder / "o.pt")]) == 2
    torch.save({"model": {"x": torch.zeros(1)}}, folder / "notours.pt")
    assert main([str(folder / "notours.pt"), "--config", str(yaml_path), "--out", str(folder / "o.pt")]) == 2
    assert "not a SPACE-CLIP checkpoint" in capsys.readouterr().err
    # The installed console script, as a user runs it.
    script = shutil.which("space-clip-convert", path=str(Path(sys.executable).parent))
    assert script, "space-clip-convert is not installed; pip install -e . first"
    run = subprocess.run([script, str(folder / "best.pt"), "--config", str(yaml_path), "--out",
                          str(folder / "cli.pt")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and load_checkpoint(folder / "cli.pt").provenance["dataset"] == "kitti"


def test_first_version_checkpoint_is_recognised_and_reproduced(clip_tower, tmp_path):
    """A checkpoint of the authors' first code version (the paper's): recognised from its keys, converted to the
    paper architecture, and its forward pass reproduced to float32 rounding."""
    shutil.copytree(clip_tower, tmp_path / "tower")
    model = tiny_model(tmp_path / "tower", architecture="paper", seed=5)
    decoder_state = _authors_checkpoint(model, tmp_path / "best.pt")
    yaml_path = _authors_yaml(tmp_path)
    values = yaml.safe_load(yaml_path.read_text())
    values.pop("use_multiscale_supervision")  # the first version's YAML had no such key
    yaml_path.write_text(yaml.safe_dump(values))
    out = convert(tmp_path / "best.pt", yaml_path, tmp_path / "ours.pt")
    converted = load_checkpoint(out)
    assert converted.config.architecture == "paper" and "first code version" in converted.provenance["source"]
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    hidden, pooled = converted.backbone(pixels)
    expected = reference_decoder(decoder_state, hidden, pooled, output_size=(352, 704), paper=True)
    torch.testing.assert_close(converted(pixels, output_size=(352, 704)), expected, rtol=1e-5, atol=1e-6)
