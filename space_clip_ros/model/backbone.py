"""The frozen vision tower: a transformers CLIP (or SigLIP) vision model that never trains.

Weights come only from ``from_pretrained`` (a hub id or a local folder) or from a checkpoint that embeds them.
Nothing here ever substitutes random weights for a tower that could not be loaded.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .config import SpaceClipConfig


class BackboneUnavailableError(RuntimeError):
    """The vision tower's weights could not be found; the message says how to provide them."""


def _classes(backbone_type: str):
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    if backbone_type == "siglip":
        return SiglipVisionConfig, SiglipVisionModel
    return CLIPVisionConfig, CLIPVisionModel


def _unavailable_message(source: str, error: Exception) -> str:
    if os.path.isdir(source):
        how = (f"The folder exists but does not hold a transformers vision model ({type(error).__name__}: {error}). "
               "It needs config.json and model.safetensors (or pytorch_model.bin), as written by save_pretrained.")
    else:
        how = (
            f"Download it once on a machine with network access: "
            f"`hf download {source}` (or `python -c \"from transformers import CLIPVisionModel; "
            f"CLIPVisionModel.from_pretrained('{source}')\"`), which fills the Hugging Face cache; "
            f"or save a copy with save_pretrained and pass its folder instead "
            f"(load_checkpoint(..., backbone=FOLDER), node parameter `backbone`, CLI --backbone). "
            f"Cause: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
    return f"Could not load the frozen vision backbone '{source}'. {how}"


def load_pretrained_tower(source: str, backbone_type: str) -> nn.Module:
    """Load a transformers vision tower by hub id or local folder, or raise :class:`BackboneUnavailableError`."""
    _, model_cls = _classes(backbone_type)
    try:
        return model_cls.from_pretrained(source)
    except (OSError, ValueError, EnvironmentError) as error:
        raise BackboneUnavailableError(_unavailable_message(source, error)) from error


def tower_from_config(vision_config: Dict[str, Any], backbone_type: str) -> nn.Module:
    """Build a tower with random weights from its config dict; callers must then load real weights into it."""
    config_cls, model_cls = _classes(backbone_type)
    config = config_cls.from_dict(dict(vision_config))
    return model_cls(config)


class FrozenBackbone(nn.Module):
    """A vision tower wrapped so that it stays frozen: no gradients, always in eval mode.

    ``forward(pixel_values)`` returns ``(hidden_states, pooled)``: the tuple of all hidden states (index 0 = embeddings
    after CLIP's pre-LayerNorm, index k = output of block k; each (B, [1 +] N, D)) and the pooled output (B, D)
    (CLIP: post-LayerNorm CLS token; SigLIP: attention-pooling head).
    """

    def __init__(self, encoder: nn.Module, config: SpaceClipConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.backbone_type = config.resolved_backbone_type
        self.interpolate_pos_encoding = config.interpolate_pos_encoding
        vision = encoder.config
        if vision.hidden_size != config.hidden_size:
            raise ValueError(
                f"the backbone has hidden size {vision.hidden_size} but the decoder was configured for "
                f"{config.hidden_size}; use a tower of the width the decoder was trained with"
            )
        if vision.num_hidden_layers < config.deepest_layer:
            raise ValueError(
                f"the decoder taps hidden_states[{config.deepest_layer}] but the backbone has only "
                f"{vision.num_hidden_layers} blocks"
            )
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    @property
    def image_size(self) -> int:
        return int(self.encoder.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.encoder.config.patch_size)

    def train(self, mode: bool = True) -> "FrozenBackbone":
        """Ignore ``mode``: the tower is frozen and stays in eval mode (dropout and any norm statistics fixed)."""
        super().train(False)
        return self

    def forward(self, pixel_values: Tensor) -> Tuple[Tuple[Tensor, ...], Tensor]:
        height, width = pixel_values.shape[-2:]
        native = self.image_size
        if (height, width) != (native, native) and not self.interpolate_pos_encoding:
            raise ValueError(
                f"the backbone takes {native}x{native} inputs, got {height}x{width}; resize the image "
                "(DepthEstimator does) or build the model with interpolate_pos_encoding=True"
            )
        kwargs: Dict[str, Any] = {"output_hidden_states": True, "return_dict": True}
        if self.interpolate_pos_encoding:
            kwargs["interpolate_pos_encoding"] = True
        with torch.no_grad():
            out = self.encoder(pixel_values=pixel_values, **kwargs)
        return tuple(out.hidden_states), out.pooler_output

    def grid_size(self, height: int, width: int) -> Optional[Tuple[int, int]]:
        return height // self.patch_size, width // self.patch_size
