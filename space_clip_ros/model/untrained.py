"""An explicitly requested, small, UNTRAINED model: the real pipeline with random weights, for offline demos.

Its depth is meaningless. Everything that uses it says so (provenance ``trained: False``, "untrained" in logs and
output names). Nothing in space_clip_ros falls back to it on its own.
"""

from __future__ import annotations

import torch

from .config import SpaceClipConfig
from .space_clip import SpaceClip

UNTRAINED_LABEL = "untrained"


def build_untrained_model(seed: int = 0, image_size: int = 224, hidden_size: int = 64) -> SpaceClip:
    """A 12-block ViT (``hidden_size`` wide, patch 16) and a narrow decoder, all random (seeded)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=12,
                              num_attention_heads=4, image_size=image_size, patch_size=16)
    config = SpaceClipConfig(backbone=f"{UNTRAINED_LABEL}:random-clip-vit-{hidden_size}", backbone_type="clip",
                             hidden_size=hidden_size, decoder_channels=(64, 32, 16, 8), film_hidden_size=32)
    model = SpaceClip(config, CLIPVisionModel(vision))
    # Lift the head's last bias so the final ReLU does not clamp a random decoder to all zeros.
    torch.nn.init.constant_(model.decoder.depth_prediction_head[3].bias, 10.0)
    model.provenance = {"trained": False, "source": "untrained demo model built from a config (random weights)"}
    return model.eval()
