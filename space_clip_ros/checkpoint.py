"""The project's checkpoint: one file that rebuilds a SPACE-CLIP model.

A checkpoint is a plain dict readable with ``torch.load(path, weights_only=True)``::

    format            "space_clip_ros.checkpoint"
    format_version    1
    model_config      SpaceClipConfig.to_dict()
    decoder           decoder state dict (the authors' key names)
    backbone          {"source": hub id or folder, "type": "clip"|"siglip", "embedded": bool,
                       "vision_config": JSON text or None, "state_dict": tower weights or None}
    preprocessing     Preprocessing.to_dict()   (input size, mean/std, default output size)
    training_camera   TrainingCamera.to_dict()  (fx and image width the decoder was trained at)
    provenance        {"trained": bool, "source": ..., "created": ISO time, "created_by": ..., ...}
    training_state    optional, written by train/ for --resume (optimizer, scheduler, EMA, RNG, epoch, step)

The frozen tower is referenced by hub id or folder and loaded with ``from_pretrained``; its weights are embedded only
when it is not a public pretrained tower (by default: when it was loaded from a local folder).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .device import resolve_device
from .model import (
    BackboneUnavailableError,
    Preprocessing,
    SpaceClip,
    SpaceClipConfig,
    TrainingCamera,
    load_pretrained_tower,
    tower_from_config,
)
from .version import __version__

FORMAT = "space_clip_ros.checkpoint"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A file is not a usable space_clip_ros checkpoint; the message says why and what to do."""


def _tensor_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached CPU copies, so a saved file never shares storage with (or pins) live parameters."""
    return {k: v.detach().to("cpu").clone() for k, v in state.items()}


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: a reader never sees a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)  # the rename itself survives a power cut
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def assemble_checkpoint(
    config: SpaceClipConfig,
    decoder_state: Mapping[str, torch.Tensor],
    preprocessing: Preprocessing,
    training_camera: TrainingCamera,
    provenance: Mapping[str, Any],
    tower: Optional[nn.Module] = None,
    training_state: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The checkpoint dict (see the module docstring). ``tower`` given: its config and weights are embedded;
    None: the tower is referenced by ``config.backbone`` only."""
    prov = dict(provenance)
    prov.setdefault("trained", False)
    prov["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    prov["created_by"] = f"space_clip_ros {__version__}"
    ckpt: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": config.to_dict(),
        "decoder": _tensor_dict(decoder_state),
        "backbone": {
            "source": config.backbone,
            "type": config.resolved_backbone_type,
            "embedded": tower is not None,
            "vision_config": tower.config.to_json_string() if tower is not None else None,
            "state_dict": _tensor_dict(tower.state_dict()) if tower is not None else None,
        },
        "preprocessing": preprocessing.to_dict(),
        "training_camera": training_camera.to_dict(),
        "provenance": prov,
    }
    if training_state is not None:
        ckpt["training_state"] = dict(training_state)
    return ckpt


def checkpoint_dict(
    model: SpaceClip,
    *,
    embed_backbone: Optional[bool] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    training_state: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The checkpoint of ``model``.

    ``embed_backbone`` None embeds the tower's weights only when ``model.config.backbone`` is a local folder.
    ``provenance`` entries are merged over ``model.provenance``.
    """
    if embed_backbone is None:
        embed_backbone = os.path.isdir(model.config.backbone)
    return assemble_checkpoint(
        model.config,
        model.decoder.state_dict(),
        model.preprocessing,
        model.training_camera,
        {**model.provenance, **(provenance or {})},
        tower=model.backbone.encoder if embed_backbone else None,
        training_state=training_state,
    )


def save_checkpoint(model: SpaceClip, path: PathLike, **kwargs: Any) -> Path:
    """Write ``model`` to ``path`` atomically; keyword arguments as :func:`checkpoint_dict`."""
    atomic_save(checkpoint_dict(model, **kwargs), path)
    return Path(path)


def _looks_official(obj: Any) -> bool:
    if not isinstance(obj, Mapping):
        return False
    state = obj.get("model", obj)
    return isinstance(state, Mapping) and any("main_path_projections" in str(k) for k in state)


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Read and validate a checkpoint file with ``weights_only=True``; raise :class:`CheckpointError` if it is not
    one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for foreign or damaged files
        raise CheckpointError(
            f"'{path}' could not be read as a space_clip_ros checkpoint with weights_only=True "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            "Is it truncated, or written by another program?"
        ) from error
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        if _looks_official(obj):
            raise CheckpointError(
                f"'{path}' is a checkpoint of the authors' train.py, not a space_clip_ros checkpoint; convert it "
                f"with: space-clip-convert {path} --config THEIR_CONFIG.yaml --out converted.pt"
            )
        raise CheckpointError(f"'{path}' is not a space_clip_ros checkpoint (no '{FORMAT}' format marker)")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"'{path}' has checkpoint format version {version!r}; this space_clip_ros reads up to {FORMAT_VERSION}. "
            "Upgrade space_clip_ros."
        )
    missing = [k for k in ("model_config", "decoder", "backbone", "preprocessing", "training_camera") if k not in obj]
    if missing:
        raise CheckpointError(f"'{path}' is missing the sections {missing}; the file is incomplete")
    return dict(obj)


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists what does not match, shapes included."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        def show(keys):
            return ", ".join(keys[:5]) + (f" ... ({len(keys)} in all)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing {show(missing)}")
        if unexpected:
            parts.append(f"unexpected {show(unexpected)}")
        if wrong:
            parts.append("shape mismatch " + show([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                    for k in wrong]))
        raise CheckpointError(f"the {what} weights do not match the model built from its config: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def _build_tower(backbone: Mapping[str, Any], override: Optional[str]) -> nn.Module:
    kind = backbone.get("type", "clip")
    if override is not None:
        return load_pretrained_tower(str(override), kind)
    if backbone.get("embedded"):
        tower = tower_from_config(json.loads(backbone["vision_config"]), kind)
        load_state_strict(tower, backbone["state_dict"], "embedded backbone")
        return tower
    return load_pretrained_tower(str(backbone["source"]), kind)


def model_from_checkpoint_dict(ckpt: Mapping[str, Any], backbone: Optional[str] = None) -> SpaceClip:
    """Rebuild a model from a validated checkpoint dict (on the CPU, in eval mode)."""
    try:
        config = SpaceClipConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the checkpoint's model_config is invalid: {error}") from error
    if backbone is not None:
        config = config.replace(backbone=str(backbone))
    tower = _build_tower(ckpt["backbone"], backbone)
    try:
        model = SpaceClip(config, tower)
    except ValueError as error:
        raise CheckpointError(f"the backbone does not fit this decoder: {error}") from error
    load_state_strict(model.decoder, ckpt["decoder"], "decoder")
    model.preprocessing = Preprocessing(**ckpt["preprocessing"])
    model.training_camera = TrainingCamera(**ckpt["training_camera"])
    model.provenance = dict(ckpt.get("provenance", {}))
    return model.eval()


def load_checkpoint(
    path: PathLike,
    device: Union[str, torch.device] = "cpu",
    backbone: Optional[str] = None,
) -> SpaceClip:
    """Load a space_clip_ros checkpoint and return the model in eval mode on ``device``.

    Args:
        path: the checkpoint file.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).
        backbone: hub id or local folder of the frozen tower, overriding the one the checkpoint names
            (e.g. a local copy on an offline robot).

    Raises:
        CheckpointError: the file is missing, damaged, of another format, or does not match its own config.
        BackboneUnavailableError: the tower's weights cannot be found; the message says how to provide them.
    """
    model = model_from_checkpoint_dict(read_checkpoint(path), backbone=backbone)
    return model.to(resolve_device(device))


__all__ = [
    "BackboneUnavailableError",
    "CheckpointError",
    "FORMAT",
    "FORMAT_VERSION",
    "assemble_checkpoint",
    "atomic_save",
    "checkpoint_dict",
    "load_checkpoint",
    "load_state_strict",
    "model_from_checkpoint_dict",
    "read_checkpoint",
    "save_checkpoint",
]
