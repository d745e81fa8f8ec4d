"""Training configurations: YAML files in train/configs/ (``base:`` inherits), overridden from the command line, and
read into one typed :class:`TrainConfig` that the trainer, datasets and evaluation take their settings from.

kitti_paper.yaml is the root of every config: it names every key with its default and documents it; the others
override a few (nyu_release.yaml: ``base: kitti_release.yaml``).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import yaml

from space_clip_ros.device import PRECISIONS as DEVICE_PRECISIONS

from .datasets import DATASETS as DATASET_TABLE
from .metrics import DATASET_PROTOCOLS

TRAIN_DIR = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(__file__).resolve().parent
CONFIGS = TRAIN_DIR / "configs"
DEFAULT_CONFIG = CONFIGS / "kitti_paper.yaml"


class ConfigError(ValueError):
    """A configuration, its data or its checkpoint cannot be used; the message says what to change. The library
    raises it; the command lines print it (``error: ...``) and exit non-zero."""


class TrainingError(RuntimeError):
    """A run that had to stop (e.g. too many non-finite steps in a row); the message says what to do."""


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


PRECISIONS = ("auto",) + tuple(DEVICE_PRECISIONS)  # training: auto = bf16 autocast on CUDA, fp32 on the CPU
SCHEDULERS = ("step", "cosine_warmup")
#: Evaluation protocols (metrics.py defines them) and standard-protocol crops by dataset.
PROTOCOLS = DATASET_PROTOCOLS
DATASETS = tuple(DATASET_TABLE)
CROPS = {name: dataset.crops for name, dataset in DATASET_TABLE.items()}


@dataclass
class TrainConfig:
    """Every setting of a training run (kitti_paper.yaml documents each). ``model`` holds SpaceClipConfig fields."""

    model: Dict[str, Any]
    dataset: str
    data_path: Optional[str]
    gt_path: Optional[str]
    filenames: str
    filenames_eval: str
    crop: List[int]
    rotate_degrees: float
    rotate_backend: str
    flip: bool
    color: bool
    min_depth: float
    max_depth: float
    strict: bool
    workers: Union[int, str]  # auto | a number
    epochs: int
    max_steps: int
    batch_size: int
    sync_batchnorm: Union[bool, str]  # auto | true | false
    lr: float
    weight_decay: float
    grad_clip: float
    max_nonfinite_steps: int
    scheduler: str
    step_epochs: int
    step_gamma: float
    warmup_ratio: float
    min_lr: float
    w_ssim: float
    loss_version: str
    aux_weights: List[float]
    ema_decay: float
    precision: str
    channels_last: bool
    compile_decoder: bool
    seed: int
    eval_protocol: str
    eval_crop: str
    summary_protocols: List[str]
    eval_flip_tta: bool
    final_flip_tta: bool
    eval_every: int
    log_every: int
    log_images: int
    device: str
    out: str

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainConfig":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known: {', '.join(sorted(names))}")
        missing = [n for n in names if n not in data]
        if missing:
            raise ConfigError(f"config keys missing: {missing} (a config should start from base: kitti_paper.yaml)")
        config = cls(**copy.deepcopy(data))
        config.validate()
        return config

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        def one_of(key: str, allowed) -> None:
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {list(allowed)}, got {getattr(self, key)!r}")

        one_of("dataset", DATASETS)
        one_of("precision", PRECISIONS)
        one_of("scheduler", SCHEDULERS)
        one_of("loss_version", ("paper", "release"))
        one_of("rotate_backend", ("pil", "opencv"))
        one_of("sync_batchnorm", (True, False, "auto"))
        one_of("eval_protocol", PROTOCOLS[self.dataset])
        one_of("eval_crop", CROPS[self.dataset])
        bad = [p for p in self.summary_protocols if p not in PROTOCOLS[self.dataset]]
        if bad:
            raise ConfigError(f"summary_protocols {bad} are not {self.dataset} protocols "
                              f"({list(PROTOCOLS[self.dataset])})")
        if len(self.crop) != 2 or min(self.crop) <= 0:
            raise ConfigError(f"crop must be [height, width], got {self.crop!r}")
        if self.workers != "auto" and not (type(self.workers) is int and self.workers >= 0):
            raise ConfigError(f"workers must be auto or a number >= 0, got {self.workers!r}")
        for key in ("batch_size", "epochs", "eval_every", "log_every"):
            if int(getattr(self, key)) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")


def resolve_config(path: Optional[Path], assignments: Iterable[str] = (), **named: Any) -> TrainConfig:
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
    return TrainConfig.from_dict(config)


def list_path(value: str) -> Path:
    """A list file as given, else relative to train/, else to this package (``splits/...``: the shipped lists, from
    any folder)."""
    path = Path(value)
    if path.is_file() or path.is_absolute():
        return path
    return next((base / path for base in (TRAIN_DIR, PACKAGE_DIR) if (base / path).is_file()), TRAIN_DIR / path)


def dump(config: TrainConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
