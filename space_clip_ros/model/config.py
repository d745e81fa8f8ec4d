"""The one object that describes a SPACE-CLIP model.

`SpaceClipConfig` holds every architectural choice; `SpaceClip(config, vision_config)` builds the network from it
with random decoder weights, and checkpoints carry it so a model can be rebuilt from the file alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

#: The frozen tower the authors trained with.
DEFAULT_BACKBONE = "openai/clip-vit-base-patch16"

#: CLIP's image statistics (RGB in [0, 1]).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: KITTI's training crop and the decoder's output size in the authors' recipes (H, W).
KITTI_OUTPUT_SIZE = (352, 704)
#: SigLIP normalises to [-1, 1].
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

BACKBONE_TYPES = ("auto", "clip", "siglip")
#: ``release``: the authors' released decoder (gated skips, conv head, output at any size). ``paper``: their first
#: code version, behind the paper's tables (plain concatenated skips, a x2 transposed-conv head, output resized to
#: the input size before any other resize).
ARCHITECTURES = ("release", "paper")


@dataclass
class SpaceClipConfig:
    """Architecture of a SPACE-CLIP model. Defaults are the authors' released KITTI model.

    Attributes:
        backbone: Hugging Face hub id or local folder of the frozen vision tower.
        backbone_type: ``"clip"`` (CLS token first, pooled output = post-LN CLS), ``"siglip"`` (no CLS token,
            pooled output = attention-pooled head) or ``"auto"`` (SigLIP when the name says so, else CLIP).
        hidden_size: width of the tower's hidden states (768 for ViT-B/16); checked against the tower when built.
        semantic_layers: ``hidden_states`` indices of the semantic pathway, deepest first. ``hidden_states[0]`` is the
            embedding output (after CLIP's pre-LayerNorm); ``hidden_states[k]`` is the output of block ``k``.
            One per decoder stage.
        structural_layers: ``hidden_states`` indices of the structural pathway, at most one per decoder stage.
        decoder_channels: channels of the decoder stages; each stage doubles the resolution (14 -> 28 -> ... -> 224).
        dropout: dropout inside the residual block of each semantic stage.
        film_hidden_size: hidden width of each FiLM generator MLP.
        use_film: modulate the semantic taps with gamma/beta predicted from the pooled context.
        use_structural_pathway: run the shallow-layer structural pathway and fuse it into the first stages.
        use_aux_heads: build the auxiliary depth heads on the intermediate stages (multi-scale supervision).
        interpolate_pos_encoding: let the tower take inputs other than its native size.
        architecture: ``release`` (the authors' release) or ``paper`` (their first code version, which produced the
            paper's Tables 1 and 2: no skip gates, head = ConvTranspose2d x2 + conv-BN-ReLU then conv + ReLU, depth
            resized to the input size first). See :data:`ARCHITECTURES`.
    """

    backbone: str = DEFAULT_BACKBONE
    backbone_type: str = "auto"
    hidden_size: int = 768
    semantic_layers: Tuple[int, ...] = (12, 9, 6, 3)
    structural_layers: Tuple[int, ...] = (2, 1, 0)
    decoder_channels: Tuple[int, ...] = (256, 128, 64, 32)
    dropout: float = 0.1
    film_hidden_size: int = 256
    use_film: bool = True
    use_structural_pathway: bool = True
    use_aux_heads: bool = False
    interpolate_pos_encoding: bool = False
    architecture: str = "release"

    def __post_init__(self) -> None:
        self.semantic_layers = tuple(int(i) for i in self.semantic_layers)
        self.structural_layers = tuple(int(i) for i in self.structural_layers)
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        if self.backbone_type not in BACKBONE_TYPES:
            raise ValueError(f"backbone_type must be one of {BACKBONE_TYPES}, got {self.backbone_type!r}")
        if not self.decoder_channels or any(c < 2 for c in self.decoder_channels):
            raise ValueError("decoder_channels must be a non-empty list of channel counts >= 2, got "
                             f"{self.decoder_channels}")
        if len(self.semantic_layers) != len(self.decoder_channels):
            raise ValueError(
                f"semantic_layers has {len(self.semantic_layers)} entries but decoder_channels has "
                f"{len(self.decoder_channels)}: the semantic pathway needs exactly one tap per decoder stage"
            )
        if self.use_structural_pathway:
            if not self.structural_layers:
                raise ValueError("use_structural_pathway is on but structural_layers is empty")
            if len(self.structural_layers) > len(self.decoder_channels):
                raise ValueError(
                    f"structural_layers has {len(self.structural_layers)} entries, more than the "
                    f"{len(self.decoder_channels)} decoder stages"
                )
        if min(self.semantic_layers + self.structural_layers) < 0:
            raise ValueError("layer indices must be >= 0 (0 is the embedding output, k the output of block k)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.architecture == "paper" and self.use_aux_heads:
            raise ValueError("the paper's architecture (the authors' first code version) has no auxiliary heads; "
                             "use_aux_heads needs architecture 'release'")

    # ------------------------------------------------------------------ derived facts
    @property
    def resolved_backbone_type(self) -> str:
        if self.backbone_type != "auto":
            return self.backbone_type
        return "siglip" if "siglip" in self.backbone.lower() else "clip"

    @property
    def has_cls_token(self) -> bool:
        """CLIP prepends a CLS token to the patch tokens; SigLIP does not."""
        return self.resolved_backbone_type == "clip"

    @property
    def num_structural_stages(self) -> int:
        return len(self.structural_layers) if self.use_structural_pathway else 0

    @property
    def deepest_layer(self) -> int:
        layers = self.semantic_layers + (self.structural_layers if self.use_structural_pathway else ())
        return max(layers)

    @property
    def default_mean_std(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        if self.resolved_backbone_type == "siglip":
            return SIGLIP_MEAN, SIGLIP_STD
        return CLIP_MEAN, CLIP_STD

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        """Plain types only (lists, not tuples), so it survives JSON, YAML and ``torch.load(weights_only=True)``."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "SpaceClipConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SpaceClipConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "SpaceClipConfig":
        return dataclasses.replace(self, **changes)


#: The four variants of the paper's ablation (Table 2), as overrides of the full model.
ABLATION_VARIANTS: Dict[str, Dict[str, bool]] = {
    "baseline": {"use_film": False, "use_structural_pathway": False},
    "film": {"use_film": True, "use_structural_pathway": False},
    "structural": {"use_film": False, "use_structural_pathway": True},
    "full": {"use_film": True, "use_structural_pathway": True},
}



@dataclass
class Preprocessing:
    """How images reach the tower, and the depth size a checkpoint was trained to produce.

    The authors feed the whole image resized (bicubic, antialiased; aspect ratio not kept) to ``input_size``, as RGB
    in [0, 1] normalised with ``mean``/``std``. ``output_size`` is the training/evaluation output (KITTI: 352x704).
    """

    input_size: Tuple[int, int] = (224, 224)
    mean: Tuple[float, ...] = CLIP_MEAN
    std: Tuple[float, ...] = CLIP_STD
    output_size: Tuple[int, int] = KITTI_OUTPUT_SIZE

    def __post_init__(self) -> None:
        self.input_size = tuple(int(v) for v in self.input_size)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.output_size = tuple(int(v) for v in self.output_size)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {self.mean}, {self.std}")

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class TrainingCamera:
    """The camera a decoder was trained with: metric scale transfers to other cameras by (fx/width) ratios."""

    fx: float = 721.5377
    width: int = 1242

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.width > 0):
            raise ValueError(f"training camera needs fx > 0 and width > 0, got fx={self.fx}, width={self.width}")
        self.fx, self.width = float(self.fx), int(self.width)

    def scale_for(self, fx: float, width: int) -> float:
        """Factor that converts depth predicted for an image of ``width`` px taken with focal ``fx`` px to metres.

        The tower sees every image resized to a fixed size, so the apparent size of an object depends on fx/width.
        """
        if not (fx > 0 and width > 0):
            raise ValueError(f"focal-length scale transfer needs fx > 0 and width > 0, got fx={fx}, width={width}")
        return (float(fx) / float(width)) / (self.fx / self.width)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


#: The training cameras of the datasets the authors used.
KITTI_CAMERA = TrainingCamera()  # fx 721.5377 px at 1242 px: the defaults above
NYU_CAMERA = TrainingCamera(fx=518.8579, width=640)


__all__ = [
    "ABLATION_VARIANTS",
    "BACKBONE_TYPES",
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_BACKBONE",
    "SIGLIP_MEAN",
    "SIGLIP_STD",
    "KITTI_CAMERA",
    "KITTI_OUTPUT_SIZE",
    "NYU_CAMERA",
    "Preprocessing",
    "SpaceClipConfig",
    "TrainingCamera",
]
