"""Training configurations: YAML files in train/configs/ (``base:`` inherits), overridden from the command line."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import yaml

TRAIN_DIR = Path(__file__).resolve().parent
CONFIGS = TRAIN_DIR / "configs"
DEFAULT_CONFIG = CONFIGS / "kitti_paper.yaml"


class ConfigError(ValueError):
    pass


def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: Path, _seen: Optional[set] = None) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file() and (CONFIGS / path.name).is_file() and not path.parent.name:
        path = CONFIGS / path.name
    if not path.is_file():
        raise ConfigError(f"config {path} does not exist (the shipped ones are in {CONFIGS})")
    seen = _seen or set()
    if path.resolve() in seen:
        raise ConfigError(f"config {path} inherits from itself")
    seen.add(path.resolve())
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    base = data.pop("base", None)
    if base:
        parent = load_yaml(path.parent / base, seen)
        data = _merge(parent, data)
    return data


def set_value(config: Dict[str, Any], assignment: str) -> None:
    """Apply ``key=value`` (``model.use_film=false``); the value is parsed as YAML. Only known keys are accepted."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {assignment!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    parts = key.strip().split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown config section {part!r} in {key!r}")
        node = node[part]
    if parts[-1] not in node and not (len(parts) == 2 and parts[0] == "model"):
        raise ConfigError(f"unknown config key {key!r}; known: {', '.join(sorted(config))}")
    node[parts[-1]] = value


def resolve_config(path: Optional[Path], assignments: Iterable[str] = (), **named: Any) -> Dict[str, Any]:
    """The config file (default kitti_paper.yaml), then ``--set`` assignments, then named flags that were given."""
    config = load_yaml(Path(path) if path else DEFAULT_CONFIG)
    defaults = load_yaml(DEFAULT_CONFIG)
    unknown = set(config) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)}; known: {', '.join(sorted(defaults))}")
    config = _merge(defaults, config)
    for assignment in assignments:
        set_value(config, assignment)
    for key, value in named.items():
        if value is None:
            continue
        if key == "backbone":
            config["model"]["backbone"] = value
        else:
            config[key] = value
    return config


def list_path(value: str) -> Path:
    """A list file as given, else relative to train/ (so ``splits/...`` works from any folder)."""
    path = Path(value)
    if path.is_file() or path.is_absolute():
        return path
    return TRAIN_DIR / path


def dump(config: Dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
