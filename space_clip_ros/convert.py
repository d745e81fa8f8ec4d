"""Convert a checkpoint of the authors' ``train.py`` into a space_clip_ros checkpoint.

The authors save ``{"model": state_dict, "optimizer": ..., "epoch": n}`` where state_dict holds the frozen tower
under ``clip_vision_model.`` and the decoder under its own names (possibly all prefixed ``module.`` by
DataParallel). Their YAML config gives the architecture. The decoder keys are ours unchanged.

    space-clip-convert best.pt --config configs/kitti.yaml --out space_clip_kitti.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from .checkpoint import CheckpointError, assemble_checkpoint, atomic_save, load_state_strict
from .model import (
    KITTI_CAMERA,
    NYU_CAMERA,
    Preprocessing,
    SpaceClipConfig,
    SpaceClipDecoder,
    load_pretrained_tower,
)

BACKBONE_PREFIX = "clip_vision_model."

#: The authors' YAML keys that describe the architecture, and ours.
_CONFIG_KEYS = {
    "clip_model_name": "backbone",
    "vision_backbone_type": "backbone_type",
    "main_path_indices": "semantic_layers",
    "structural_path_indices": "structural_layers",
    "decoder_channels": "decoder_channels",
    "decoder_dropout": "dropout",
    "film_param_hidden_dim": "film_hidden_size",
    "use_film": "use_film",
    "use_structural_pathway": "use_structural_pathway",
    "use_multiscale_supervision": "use_aux_heads",
    "clip_interpolate_pos_encoding": "interpolate_pos_encoding",
}
_CAMERAS = {"kitti": KITTI_CAMERA, "nyu": NYU_CAMERA}


def read_official_yaml(path: Path) -> Dict[str, Any]:
    import yaml

    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"could not read the authors' YAML config '{path}': {error}") from error
    if not isinstance(values, dict):
        raise CheckpointError(f"'{path}' is not a YAML mapping of the authors' config keys")
    return values


def architecture_of(decoder_state: Mapping[str, torch.Tensor]) -> str:
    """``paper`` for a checkpoint of the authors' first code version (its head starts with an upsample block and its
    skips have no gates), ``release`` otherwise."""
    first_version = "depth_prediction_head.0.upsample.weight" in decoder_state and not any(
        ".skip_clip_gate." in key for key in decoder_state)
    return "paper" if first_version else "release"


def config_from_official(values: Mapping[str, Any], yaml_dir: Path, hidden_size: int,
                         architecture: Optional[str] = None) -> SpaceClipConfig:
    """Our config from the authors' YAML values. A ``clip_model_name`` that names a folder relative to the YAML's own
    folder is resolved to that folder; anything else is kept as a hub id. ``architecture`` (from the checkpoint's
    keys, :func:`architecture_of`) selects the release or the first code version."""
    kwargs: Dict[str, Any] = {ours: values[theirs] for theirs, ours in _CONFIG_KEYS.items() if theirs in values}
    if "backbone" in kwargs:
        candidate = (yaml_dir / str(kwargs["backbone"])).resolve()
        if candidate.is_dir():
            kwargs["backbone"] = str(candidate)
    kwargs["hidden_size"] = hidden_size
    if architecture is not None:
        kwargs["architecture"] = architecture
        if architecture == "paper":  # the first code version had no auxiliary heads (nor the YAML key)
            kwargs["use_aux_heads"] = False
    try:
        return SpaceClipConfig(**kwargs)
    except ValueError as error:
        raise CheckpointError(f"the authors' config describes an invalid model: {error}") from error


def preprocessing_from_official(values: Mapping[str, Any], config: SpaceClipConfig) -> Preprocessing:
    mean, std = config.default_mean_std
    side = int(values.get("clip_input_size", 224))
    return Preprocessing(
        input_size=(side, side),
        mean=values.get("vision_image_mean", mean),
        std=values.get("vision_image_std", std),
        output_size=(int(values.get("input_height", 352)), int(values.get("input_width", 704))),
    )


def split_official_state(obj: Any) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """(decoder state, tower state) from the authors' checkpoint object, ``module.`` prefixes removed."""
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError("the file holds no state dict (expected the authors' {'model': state_dict, ...})")
    decoder, tower = {}, {}
    for key, value in state.items():
        key = str(key)
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith(BACKBONE_PREFIX):
            tower[key[len(BACKBONE_PREFIX):]] = value
        else:
            decoder[key] = value
    if "main_path_projections.0.weight" not in decoder:
        raise CheckpointError("no 'main_path_projections.0.weight' in the state dict: not a SPACE-CLIP checkpoint")
    return decoder, tower


def align_tower_keys(state: Mapping[str, torch.Tensor], own_keys: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Match tower keys across transformers versions: 4.x nests them under ``vision_model.``, 5.x does not."""
    own_nested = any(k.startswith("vision_model.") for k in own_keys)
    out = {}
    for key, value in state.items():
        nested = key.startswith("vision_model.")
        if nested and not own_nested:
            key = key[len("vision_model."):]
        elif own_nested and not nested:
            key = "vision_model." + key
        out[key] = value
    return out


def convert(
    checkpoint: os.PathLike,
    config_yaml: os.PathLike,
    out: os.PathLike,
    embed_backbone: Optional[bool] = None,
    backbone: Optional[str] = None,
) -> Path:
    """Convert the authors' checkpoint + YAML into ``out``.

    The tower's weights are embedded when the config names a local folder (or ``embed_backbone`` is True, or the
    authors trained it: ``freeze_clip_vision: false``); then the tower is built from that folder (or ``backbone``)
    and filled with the checkpoint's own tower weights. A hub id is only referenced: nothing is downloaded.
    """
    checkpoint, config_yaml = Path(checkpoint), Path(config_yaml)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint '{checkpoint}' does not exist")
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"could not read '{checkpoint}' with weights_only=True: {error}") from error
    decoder_state, tower_state = split_official_state(obj)
    values = read_official_yaml(config_yaml)
    hidden = int(decoder_state["main_path_projections.0.weight"].shape[1])
    architecture = architecture_of(decoder_state)
    config = config_from_official(values, config_yaml.parent, hidden, architecture)
    if backbone is not None:
        config = config.replace(backbone=str(backbone))
    if not values.get("freeze_clip_vision", True):
        if embed_backbone is False:
            raise CheckpointError("the authors' config trained the tower (freeze_clip_vision: false); "
                                  "its weights must be embedded")
        embed_backbone = True
    if embed_backbone is None:
        embed_backbone = os.path.isdir(config.backbone)

    # Check the decoder weights against the architecture first: cheap, and needs no tower.
    load_state_strict(SpaceClipDecoder(config), decoder_state, "decoder")
    if embed_backbone:
        if not tower_state:
            raise CheckpointError("the checkpoint holds no tower weights (clip_vision_model.*) to embed")
        tower = load_pretrained_tower(config.backbone, config.resolved_backbone_type)
        load_state_strict(tower, align_tower_keys(tower_state, list(tower.state_dict())), "backbone")
    else:
        tower = None

    provenance = {
        "trained": True,
        "source": f"authors' train.py checkpoint {checkpoint.name} (epoch {obj.get('epoch', '?')}), "
                  f"config {config_yaml.name}" + (", first code version (the paper's)" if architecture == "paper"
                                                   else ""),
        "dataset": str(values.get("dataset", "unknown")),
    }
    camera = _CAMERAS.get(str(values.get("dataset", "")).lower(), KITTI_CAMERA)
    ckpt = assemble_checkpoint(config, decoder_state, preprocessing_from_official(values, config), camera,
                               provenance, tower=tower)
    atomic_save(ckpt, out)
    return Path(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="space-clip-convert",
        description="Convert a checkpoint of the authors' SPACE-CLIP train.py into a space_clip_ros checkpoint.",
    )
    parser.add_argument("checkpoint", help="the authors' checkpoint ({'model': state_dict, ...})")
    parser.add_argument("--config", required=True, help="the authors' YAML config it was trained with")
    parser.add_argument("--out", required=True, help="where to write the space_clip_ros checkpoint")
    parser.add_argument("--backbone", help="hub id or local folder of the tower, overriding clip_model_name")
    embed = parser.add_mutually_exclusive_group()
    embed.add_argument("--embed-backbone", dest="embed", action="store_const", const=True,
                       help="store the tower's weights in the file (default: only for a local-folder tower)")
    embed.add_argument("--no-embed-backbone", dest="embed", action="store_const", const=False,
                       help="only reference the tower by id/folder")
    args = parser.parse_args(argv)
    from .model import BackboneUnavailableError

    try:
        path = convert(args.checkpoint, args.config, args.out, embed_backbone=args.embed, backbone=args.backbone)
    except (CheckpointError, BackboneUnavailableError) as error:
        print(f"space-clip-convert: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
