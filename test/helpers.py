"""Helpers the tests share: tiny towers, tiny configs, tiny checkpoints."""

from pathlib import Path
from typing import Any

import torch

from space_clip_ros.model import SpaceClip, SpaceClipConfig

TINY_HIDDEN = 32
TINY_IMAGE = 64
TINY_CHANNELS = (16, 8, 8, 4)


def save_tiny_tower(folder: Path, kind: str = "clip", seed: int = 0, layers: int = 12) -> Path:
    """Save a random tower with save_pretrained so tests load it through from_pretrained, like a real one."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    config_cls, model_cls = (SiglipVisionConfig, SiglipVisionModel) if kind == "siglip" else (
        CLIPVisionConfig, CLIPVisionModel)
    torch.manual_seed(seed)
    config = config_cls(hidden_size=TINY_HIDDEN, intermediate_size=64, num_hidden_layers=layers,
                        num_attention_heads=4, image_size=TINY_IMAGE, patch_size=16)
    model_cls(config).save_pretrained(folder)
    return Path(folder)


def make_tiny_config(tower: Path, **overrides: Any) -> SpaceClipConfig:
    values = dict(backbone=str(tower), hidden_size=TINY_HIDDEN, decoder_channels=TINY_CHANNELS, film_hidden_size=16)
    if "siglip" in str(tower):
        values["backbone_type"] = "siglip"
    values.update(overrides)
    return SpaceClipConfig(**values)


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine weights, so eval-mode outputs test them."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def tiny_model(tower: Path, seed: int = 0, **overrides: Any) -> SpaceClip:
    torch.manual_seed(seed)
    model = SpaceClip.from_pretrained_backbone(make_tiny_config(tower, **overrides))
    randomize_batchnorm(model.decoder, seed)
    positive_heads(model.decoder)
    return model.eval()


def positive_heads(decoder: torch.nn.Module) -> None:
    """Shift the heads' last bias up so random weights give non-zero depth through the final ReLU."""
    heads = [decoder.depth_prediction_head] + list(getattr(decoder, "aux_depth_heads", []))
    for head in heads:
        [conv for conv in head if isinstance(conv, torch.nn.Conv2d)][-1].bias.data.fill_(1.0)


def node_aligner(**values: Any):
    """A ScaleAligner with the node's default values (its parameter table), ``values`` replacing some."""
    from space_clip_ros.alignment import ScaleAligner
    from space_clip_ros.node.settings import NodeSettings

    return ScaleAligner(**{**NodeSettings.from_values({}).alignment(), **values})


def node_fusion(**values: Any):
    """A TemporalFusion with the node's default values, ``values`` replacing some."""
    from space_clip_ros.node.settings import NodeSettings
    from space_clip_ros.temporal import TemporalFusion

    return TemporalFusion(**{**NodeSettings.from_values({}).fusion(), **values})
