"""The SPACE-CLIP architecture: variants, the frozen backbone, the taps, the released key layout."""

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_CHANNELS, make_tiny_config, randomize_batchnorm, tiny_model
from reference_forward import reference_decoder

from space_clip_ros.model import (
    ABLATION_VARIANTS,
    BackboneUnavailableError,
    SpaceClip,
    SpaceClipConfig,
    SpaceClipDecoder,
    tokens_to_map,
)

DATA = Path(__file__).resolve().parent / "data"  # official_state_dict_shapes.json: the released model's keys


def _pixels(batch=2, side=64, seed=0):
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("variant", sorted(ABLATION_VARIANTS))
def test_every_ablation_variant_runs_forward_and_backward(clip_tower, variant):
    model = tiny_model(clip_tower, **ABLATION_VARIANTS[variant], use_aux_heads=True)
    model.train()
    depth, aux = model(_pixels(), output_size=(30, 50), return_aux=True)
    assert depth.shape == (2, 1, 30, 50)
    assert [a.shape for a in aux] == [(2, 1, 30, 50)] * 3
    assert (depth >= 0).all()
    (depth.mean() + sum(a.mean() for a in aux)).backward()
    for name, param in model.decoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"{variant}: no gradient for {name}"
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("variant", sorted(ABLATION_VARIANTS))
def test_variants_have_the_modules_they_should(clip_tower, variant):
    flags = ABLATION_VARIANTS[variant]
    decoder = tiny_model(clip_tower, **flags).decoder
    names = {k.split(".")[0] for k in decoder.state_dict()}
    assert ("film_param_generators" in names) == flags["use_film"]
    assert ("structural_path_projections" in names) == flags["use_structural_pathway"]
    gates = [b.skip_struct_gate is not None for b in decoder.main_decoder_blocks]
    assert gates == ([True, True, True, False] if flags["use_structural_pathway"] else [False] * 4)


def test_matches_an_independent_functional_implementation(clip_tower):
    for flags in ABLATION_VARIANTS.values():
        model = tiny_model(clip_tower, **flags)
        pixels = _pixels()
        hidden, pooled = model.backbone(pixels)
        expected = reference_decoder(model.decoder.state_dict(), hidden, pooled, use_film=flags["use_film"],
                                     use_structural=flags["use_structural_pathway"], output_size=(40, 70))
        got = model(pixels, output_size=(40, 70))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert got.abs().max() > 0


def test_backbone_is_frozen_and_stays_in_eval_mode(clip_tower):
    model = tiny_model(clip_tower)
    model.train()
    assert model.decoder.training
    assert not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    trainable = set(map(id, model.trainable_parameters()))
    assert trainable == set(map(id, model.decoder.parameters()))
    assert not trainable & set(map(id, model.backbone.parameters()))


def test_backbone_weights_do_not_change_in_a_training_step(clip_tower):
    model = tiny_model(clip_tower).train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model(_pixels()).mean().backward()
    optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_decode_reuses_features_from_the_callers_own_tower(clip_tower):
    from transformers import CLIPVisionModel

    model = tiny_model(clip_tower)
    callers_tower = CLIPVisionModel.from_pretrained(str(clip_tower)).eval()
    pixels = _pixels()
    with torch.no_grad():
        out = callers_tower(pixel_values=pixels, output_hidden_states=True)
        via_decode = model.decode(out.hidden_states, out.pooler_output, output_size=(20, 20))
        via_forward = model(pixels, output_size=(20, 20))
    torch.testing.assert_close(via_decode, via_forward)


def test_decoder_checks_its_inputs(clip_tower):
    model = tiny_model(clip_tower)
    hidden, pooled = model.backbone(_pixels())
    with pytest.raises(ValueError, match=r"taps hidden_states\[12\] but got 12 entries"):
        model.decode(hidden[:12], pooled)
    with pytest.raises(ValueError, match="pooled output must be"):
        model.decode(hidden, pooled[:1])
    with pytest.raises(ValueError, match="use_aux_heads"):
        model.decode(hidden, pooled, return_aux=True)
    with pytest.raises(ValueError, match="do not form a square grid"):
        model.decode([h[:, :-1] for h in hidden], pooled)


def test_tokens_to_map_is_row_major_and_drops_cls():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)  # CLS + a 2x3 grid, D = 3
    fmap = tokens_to_map(tokens, (2, 3), has_cls_token=True)
    assert fmap.shape == (2, 3, 2, 3)
    assert torch.equal(fmap[1, :, 1, 2], tokens[1, 1 + 1 * 3 + 2])
    with pytest.raises(ValueError, match="does not match"):
        tokens_to_map(tokens, (3, 3), has_cls_token=True)


def test_siglip_tower_without_cls_token_works_by_config(siglip_tower):
    model = tiny_model(siglip_tower, use_aux_heads=True)
    assert model.config.resolved_backbone_type == "siglip" and not model.config.has_cls_token
    assert model.preprocessing.mean == (0.5, 0.5, 0.5)
    model.train()
    depth = model(_pixels())
    depth.mean().backward()
    hidden, pooled = model.backbone(_pixels())
    assert hidden[0].shape[1] == 16  # 4x4 patches, no CLS
    model.eval()
    expected = reference_decoder(model.decoder.state_dict(), hidden, pooled, has_cls=False)
    torch.testing.assert_close(model(_pixels()), expected, rtol=1e-5, atol=1e-6)


def test_wrong_input_size_explains_itself(clip_tower):
    model = tiny_model(clip_tower)
    with pytest.raises(ValueError, match="takes 64x64 inputs, got 48x64"):
        model(torch.zeros(1, 3, 48, 64))
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, 3"):
        model(torch.zeros(1, 64, 64))


def test_interpolate_pos_encoding_takes_other_sizes(clip_tower):
    model = tiny_model(clip_tower, interpolate_pos_encoding=True)
    assert model(torch.zeros(1, 3, 48, 80)).shape == (1, 1, 48, 80)


def test_backbone_width_mismatch_is_reported(clip_tower):
    with pytest.raises(ValueError, match="hidden size 32 but the decoder was configured for 768"):
        SpaceClip.from_pretrained_backbone(make_tiny_config(clip_tower, hidden_size=768))


def test_missing_backbone_never_falls_back_to_random_weights(tmp_path):
    config = SpaceClipConfig(backbone="space-clip-tests/not-a-real-model")
    with pytest.raises(BackboneUnavailableError) as info:
        SpaceClip.from_pretrained_backbone(config)
    message = str(info.value)
    assert "space-clip-tests/not-a-real-model" in message and "hf download" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BackboneUnavailableError, match="config.json"):
        SpaceClip.from_pretrained_backbone(config, backbone=str(empty))


@pytest.mark.parametrize("changes, match", [
    (dict(semantic_layers=(12, 9, 6)), "one tap per decoder stage"),
    (dict(structural_layers=(3, 2, 1, 0, 0)), "more than the 4 decoder stages"),
    (dict(backbone_type="dino"), "backbone_type"),
    (dict(dropout=1.5), "dropout"),
    (dict(structural_layers=(), use_structural_pathway=True), "structural_layers is empty"),
])
def test_config_rejects_impossible_models(changes, match):
    with pytest.raises(ValueError, match=match):
        SpaceClipConfig(**changes)


def test_config_round_trips_through_plain_dicts():
    config = SpaceClipConfig(use_aux_heads=True, decoder_channels=[64, 32, 16, 8])
    values = config.to_dict()
    assert values["decoder_channels"] == [64, 32, 16, 8] and json.loads(json.dumps(values)) == values
    assert SpaceClipConfig.from_dict(values) == config
    with pytest.raises(ValueError, match="unknown SpaceClipConfig keys"):
        SpaceClipConfig.from_dict({**values, "clip_model_name": "x"})


def test_default_configuration_has_the_released_keys_and_shapes():
    """The full-size default model (ViT-B/16 dimensions, random weights) against the released state dict."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    official = dict(json.loads((DATA / "official_state_dict_shapes.json").read_text()))
    tower = CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224))
    model = SpaceClip(SpaceClipConfig(use_aux_heads=True), tower)
    ours = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone.encoder."):
            key = "clip_vision_model." + key[len("backbone.encoder."):]
        else:
            assert key.startswith("decoder.")
            key = key[len("decoder."):]
        ours[key] = list(value.shape)
    assert set(ours) == set(official)
    assert {k: v for k, v in ours.items() if official[k] != v} == {}
    assert len(official) == 421
    n_params = sum(p.numel() for p in model.parameters())
    n_decoder = sum(p.numel() for p in model.decoder.parameters())
    assert (n_params, n_decoder) == (97_850_420, 12_050_996)


def test_aux_head_widths_follow_the_release():
    decoder = SpaceClipDecoder(SpaceClipConfig(use_aux_heads=True, hidden_size=32, decoder_channels=TINY_CHANNELS,
                                               film_hidden_size=8))
    assert [h[0].out_channels for h in decoder.aux_depth_heads] == [16, 16, 16]  # max(C // 2, 16)
    randomize_batchnorm(decoder)


@pytest.mark.parametrize("variant", sorted(ABLATION_VARIANTS))
def test_paper_architecture_matches_the_first_code_version(clip_tower, variant):
    """The authors' first code version (behind the paper's tables): no skip gates, a x2 transposed-conv head, depth
    resized to the input size before the output size; checked against the independent functional version."""
    model = tiny_model(clip_tower, architecture="paper", **ABLATION_VARIANTS[variant])
    keys = set(model.decoder.state_dict())
    assert not any("gate" in k for k in keys)
    assert {"depth_prediction_head.0.upsample.weight", "depth_prediction_head.0.conv.0.weight",
            "depth_prediction_head.0.conv.1.running_var", "depth_prediction_head.1.weight",
            "depth_prediction_head.1.bias"} <= keys
    assert tuple(model.decoder.state_dict()["depth_prediction_head.0.upsample.weight"].shape) == (4, 2, 2, 2)
    pixels = _pixels()
    hidden, pooled = model.backbone(pixels)
    flags = ABLATION_VARIANTS[variant]
    expected = reference_decoder(model.decoder.state_dict(), hidden, pooled, use_film=flags["use_film"],
                                 use_structural=flags["use_structural_pathway"], output_size=(40, 70), paper=True)
    got = model(pixels, output_size=(40, 70))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.abs().max() > 0
    release = tiny_model(clip_tower, **flags)
    assert not torch.allclose(release(pixels, output_size=(40, 70)), got)
    model.train()
    got = model(pixels, output_size=(40, 70))
    got.mean().backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_paper_architecture_has_no_aux_heads():
    with pytest.raises(ValueError, match="no auxiliary heads"):
        SpaceClipConfig(architecture="paper", use_aux_heads=True)
    with pytest.raises(ValueError, match="architecture must be one of"):
        SpaceClipConfig(architecture="v3")
