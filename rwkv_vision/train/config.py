"""Training configuration: a YAML or TOML (or JSON) file plus dotted command-line overrides, validated against a schema.

The schema is the dataclasses below (every key, its type and default). Loading checks each key: an unknown one
raises ``ConfigError`` naming it, where it came from and the valid keys (with a close match when there is one); a
value that does not fit the key's type raises naming both. ``model.args`` (keyword arguments of the model
constructor) and ``data.args`` (of the data set reader chosen by ``data.name``, see :data:`DATASETS`) are free-form
mappings; ``data.args`` is checked against the reader's signature.

Overrides are ``key=value`` strings: ``optim.lr=1e-3``, ``model.args.img_size=64``, ``data.args.fold=3``,
``augment.scale=[0.8,1.0]``, ``train.ema_decay=null``. Values are read as JSON when they parse as JSON (numbers,
true/false/null, lists), otherwise as plain strings, then converted to the key's type.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data import fer, nyu

__all__ = ["Config", "ConfigError", "DATASETS", "build_dataset", "check_data_args", "config_from_dict",
           "dataset_task", "load_config", "parse_overrides"]


class ConfigError(ValueError):
    """A configuration key or value that is not valid; the message names the key and its source."""


TASKS = ("classification", "depth")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "exponential", "constant")
PRECISIONS = ("none", "bf16", "fp16")


@dataclass
class ModelConfig:
    """``name``: a registered model (``rwkv_vision.list_models()``); ``args``: its keyword overrides (for
    classification ``num_classes`` defaults to the number of classes of the training data). Starting weights, for
    fine-tuning (at most one): ``pretrained``: true (the entry's published weights), a folder saved by
    ``save_pretrained`` or ``"hf-hub:org/name[@revision]"``, with a new head when the class count differs (as
    ``create_model(name, pretrained=...)``); ``checkpoint``: a weights file loaded strictly."""
    name: str = ""
    args: dict = field(default_factory=dict)
    pretrained: bool | str = False
    checkpoint: str | None = None


@dataclass
class DataConfig:
    """``name``: a reader of :data:`DATASETS`; ``args``: its arguments. ``*_split``: the reader's split names for
    training, per-epoch validation (null: none) and the final test (null: none). Preprocessing keys left null come
    from the model's ``pretrained_cfg``: ``input_size`` [H, W] pixels, ``crop_pct``, ``interpolation``,
    ``mean``, ``std`` (0-1 scale). ``balanced_sampler``: draw training samples with probability inversely
    proportional to their class frequency (classification)."""
    name: str = ""
    args: dict = field(default_factory=dict)
    train_split: str = "train"
    val_split: str | None = "test"
    test_split: str | None = "test"
    batch_size: int = 64
    eval_batch_size: int | None = None
    workers: int = 0
    balanced_sampler: bool = False
    input_size: list[int] | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None


@dataclass
class AugmentConfig:
    """Training augmentation (see :class:`rwkv_vision.data.transforms.TrainTransform`). ``scale``: random resized
    crop area range (null: no crop, resize only); ``ratio``: its aspect range; ``hflip``: flip probability;
    ``rotation``: max degrees; ``brightness``/``contrast``/``saturation``: jitter amounts; ``erasing``: random
    erasing probability, ``erasing_scale``: its area range. Depth uses ``hflip``, the jitter amounts and ``crop``
    ([H, W] random crop after resizing)."""
    scale: list[float] | None = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.75, 4 / 3])
    hflip: float = 0.5
    rotation: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    erasing: float = 0.0
    erasing_scale: list[float] = field(default_factory=lambda: [0.02, 0.33])
    crop: list[int] | None = None


@dataclass
class OptimConfig:
    """``name``: adamw, adam or sgd; ``sam_rho`` > 0 wraps it in SAM (sharpness-aware minimisation) with that
    radius (``sam_adaptive``: ASAM). ``clip_grad``: max global gradient norm (null: none); ``accumulate``:
    micro-batches per optimiser step; ``decay_1d``: also apply weight decay to biases, norms and other 1-D
    parameters (and position embeddings)."""
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9
    nesterov: bool = False
    sam_rho: float = 0.0
    sam_adaptive: bool = False
    clip_grad: float | None = None
    accumulate: int = 1
    decay_1d: bool = False


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, updated every optimiser step. ``cosine``: linear warm-up over ``warmup_epochs`` from
    ``warmup_factor`` x lr, then cosine to ``min_lr``; ``onecycle``: torch's OneCycleLR (peak lr, ``pct_start``);
    ``exponential``: lr x ``gamma`` per epoch (after the warm-up, if any); ``constant``."""
    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.01
    min_lr: float = 0.0
    gamma: float = 0.98
    pct_start: float = 0.3


@dataclass
class LossConfig:
    """Classification: cross-entropy with ``label_smoothing``. Depth: the weights of the
    :class:`rwkv_vision.losses.DepthLoss` terms ``silog``, ``l1``, ``grad``, ``ssim``, and the valid range in
    metres ``min_depth``, ``max_depth``."""
    label_smoothing: float = 0.0
    silog: float = 1.0
    l1: float = 0.0
    grad: float = 0.0
    ssim: float = 0.0
    min_depth: float = 1e-3
    max_depth: float = 10.0


@dataclass
class TrainConfig:
    """``epochs``; ``precision``: none, bf16 (autocast, CPU or CUDA) or fp16 (CUDA, with a gradient scaler);
    ``ema_decay``: keep an exponential moving average of the weights (null: none; evaluated and exported instead of
    the raw weights); ``export``: "best" (best validation ``monitor`` value) or "last" epoch weights; ``monitor``:
    the validation metric ("top1", "macro_f1", "loss", or a depth metric; null: top1 / abs_rel); ``device``:
    "auto", "cpu", "cuda", "cuda:1"...; ``threads``: torch CPU threads (null: torch's default);
    ``progress``: "auto" (bars on a terminal only), "on" or "off"; ``tensorboard``: also log to
    ``output/tensorboard``."""
    epochs: int = 10
    precision: str = "none"
    ema_decay: float | None = None
    export: str = "best"
    monitor: str | None = None
    device: str = "auto"
    threads: int | None = None
    progress: str = "auto"
    tensorboard: bool = False


@dataclass
class CardConfig:
    """What the exported model's card says beyond what training measures: ``license`` of the weights (often the
    training data's terms) and ``notes``, one paragraph each, shown under "Limitations and notes"."""
    license: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Config:
    """A training run: ``task`` (classification or depth), ``seed``, ``output`` folder, and the sections."""
    task: str = "classification"
    seed: int = 0
    output: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    card: CardConfig = field(default_factory=CardConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# Data sets by name: each is called as reader(split=..., transform=..., **data.args)


def _per_split_csv(split: str, train_csv: str, test_csv: str, val_csv: str | None) -> str:
    files = {"train": train_csv, "test": test_csv, "val": val_csv}
    if files.get(split) is None:
        raise ConfigError(f"no csv file for split {split!r} (data.args.{split}_csv)")
    return files[split]


def affectnet(split: str, train_csv: str, test_csv: str, val_csv: str | None = None, root: str | None = None,
              num_classes: int = 8, crop_face: bool = False, transform=None) -> fer.AffectNet:
    """AffectNet by split: ``train_csv`` (training.csv), ``test_csv`` (validation.csv, the usual test set)."""
    return fer.AffectNet(_per_split_csv(split, train_csv, test_csv, val_csv), root, num_classes, crop_face,
                         transform)


def nyu_csv(split: str, train_csv: str, test_csv: str, val_csv: str | None = None, root: str | None = None,
            depth_encoding: str = "auto", transform=None) -> nyu.NYUDepthCSV:
    """NYU Depth V2 (Kaggle / DenseDepth csv) by split; ``root``: folder the csv paths are relative to (default:
    each csv's folder)."""
    return nyu.NYUDepthCSV(_per_split_csv(split, train_csv, test_csv, val_csv), root, depth_encoding, transform)


DATASETS: dict[str, tuple[str, Callable]] = {
    "rafdb": ("classification", fer.RAFDBBasic),
    "affectnet": ("classification", affectnet),
    "fer2013": ("classification", fer.FER2013),
    "ferplus": ("classification", fer.FERPlus),
    "imagefolder": ("classification", fer.ImageFolder),
    "ckplus": ("classification", fer.CKPlus48),
    "nyu_csv": ("depth", nyu_csv),
}


def _reader_params(name: str) -> tuple[str, dict[str, inspect.Parameter]]:
    if name not in DATASETS:
        raise ConfigError(f"data.name: unknown data set {name!r}; choose from {', '.join(sorted(DATASETS))}")
    task, reader = DATASETS[name]
    params = dict(inspect.signature(reader).parameters)
    params.pop("split"), params.pop("transform")
    return task, params


def check_data_args(name: str, args: Mapping, task: str | None = None) -> None:
    """Raise ``ConfigError`` if data set ``name`` is unknown or not for ``task`` (when given), or ``args`` has an
    unknown or lacks a required argument of its reader."""
    reader_task, params = _reader_params(name)
    if task is not None and reader_task != task:
        raise ConfigError(f"data.name {name!r} is a {reader_task} data set but task is {task!r}")
    unknown = [k for k in args if k not in params]
    if unknown:
        raise ConfigError(f"data.args: unknown argument(s) {unknown} for data set {name!r}; valid: "
                          f"{', '.join(params)}")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in args]
    if missing:
        raise ConfigError(f"data.args: data set {name!r} needs {missing}")


def dataset_task(name: str) -> str:
    """The task ("classification" or "depth") of data set ``name``."""
    return _reader_params(name)[0]


def build_dataset(name: str, args: Mapping, split: str, transform=None):
    """The data set ``name`` (a key of :data:`DATASETS`) for ``split``, built with ``args`` (checked first)."""
    check_data_args(name, args)
    return DATASETS[name][1](split=split, transform=transform, **args)


# ---------------------------------------------------------------------------------------------------------------------
# Loading, overriding and validating


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    elif path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ImportError(f"reading {path} needs PyYAML (pip install 'rwkv-vision[train]'), or write the "
                              "config as TOML") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    elif path.suffix.lower() == ".json":  # the resolved config a run writes (train_config.json)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from exc
    else:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml, .toml or .json")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_value(text: str):
    """A command-line value: JSON if it parses (1e-3, true, null, [0.8, 1.0]), "none"/"None" -> None, else the
    string itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None if text in ("none", "None", "~") else text


def parse_overrides(overrides: Sequence[str]) -> list[tuple[list[str], object]]:
    """``["optim.lr=1e-3", ...]`` -> ``[(["optim", "lr"], 0.001), ...]``."""
    parsed = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"override {item!r}: expected key=value with a dotted key, e.g. optim.lr=1e-3")
        parsed.append((key.strip().split("."), parse_value(value.strip())))
    return parsed


def _coerce(value, annotation, key: str, source: str):
    """``value`` converted to the type ``annotation`` (str, int, float, bool, dict, list[T], T | None)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for inner in options[:-1]:  # e.g. bool | str: true/false first, else a string
            try:
                return _coerce(value, inner, key, source)
            except ConfigError:
                pass
        return _coerce(value, options[-1], key, source)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{key} ({source}): expected {expected}, got {value!r}")

    if origin is list:
        if isinstance(value, str):  # YAML/TOML lists arrive as lists; "[0.8,1]" strings from YAML scalars
            value = parse_value(value)
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list of {args[0].__name__}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if annotation is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.lower() in ("true", "yes", "on")
        raise fail("true or false")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise fail("an integer")
        try:
            number = float(value)
        except ValueError:
            raise fail("an integer") from None
        if number != int(number):
            raise fail("an integer")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise fail("a number")
        try:
            return float(value)  # also "3.5e-5": YAML 1.1 reads exponents without a dot as strings
        except (TypeError, ValueError):
            raise fail("a number") from None
    if annotation is str:
        if isinstance(value, (dict, list)) or value is None:
            raise fail("a string")
        return str(value)
    raise TypeError(f"unsupported config type {annotation} for {key}")


def _unknown_key(key: str, valid: Sequence[str], source: str) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r} ({source}){hint} valid keys here: {', '.join(valid)}")


def _apply(obj, key_path: list[str], value, source: str, prefix: str = "") -> None:
    """Set ``key_path`` in the dataclass ``obj`` to ``value`` (merging mappings into sections), checking keys and
    types."""
    hints = typing.get_type_hints(type(obj))
    name, rest = key_path[0], key_path[1:]
    key = f"{prefix}{name}"
    if name not in hints:
        raise _unknown_key(key, list(hints), source)
    current = getattr(obj, name)
    if dataclasses.is_dataclass(current):
        if rest:
            _apply(current, rest, value, source, f"{key}.")
        elif isinstance(value, Mapping):
            for sub, sub_value in value.items():
                _apply(current, [str(sub)], sub_value, source, f"{key}.")
        else:
            raise ConfigError(f"{key} ({source}): a section; expected a mapping, got {value!r}")
    elif hints[name] is dict and rest:  # model.args.img_size=64: free-form mapping, set one entry
        target = current
        for part in rest[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{key}.{'.'.join(rest)} ({source}): {part!r} is not a mapping")
        target[rest[-1]] = value
    elif rest:
        raise ConfigError(f"{key} ({source}) is a value, not a section: cannot set {key}.{'.'.join(rest)}")
    else:
        setattr(obj, name, _coerce(value, hints[name], key, source))


def _validate(cfg: Config) -> None:
    choices = [("task", cfg.task, TASKS), ("optim.name", cfg.optim.name, OPTIMIZERS),
               ("schedule.name", cfg.schedule.name, SCHEDULES), ("train.precision", cfg.train.precision, PRECISIONS),
               ("train.export", cfg.train.export, ("best", "last")),
               ("train.progress", cfg.train.progress, ("auto", "on", "off"))]
    for key, value, allowed in choices:
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    if not cfg.model.name:
        raise ConfigError("model.name is required (a registered model, see rwkv_vision.list_models())")
    if not cfg.data.name:
        raise ConfigError(f"data.name is required: one of {', '.join(sorted(DATASETS))}")
    check_data_args(cfg.data.name, cfg.data.args, cfg.task)
    positive = [("train.epochs", cfg.train.epochs), ("data.batch_size", cfg.data.batch_size),
                ("optim.accumulate", cfg.optim.accumulate), ("optim.lr", cfg.optim.lr)]
    for key, value in positive:
        if value <= 0:
            raise ConfigError(f"{key} must be > 0; got {value}")
    if cfg.optim.sam_rho < 0:
        raise ConfigError(f"optim.sam_rho must be >= 0; got {cfg.optim.sam_rho}")
    if cfg.train.precision == "fp16" and cfg.optim.sam_rho > 0:
        raise ConfigError("train.precision=fp16 with SAM is not supported (the gradient scaler would have to unscale "
                          "between SAM's two passes); use bf16")
    if cfg.model.pretrained not in (False, "") and cfg.model.checkpoint is not None:
        raise ConfigError("model.pretrained and model.checkpoint both give starting weights: set one")
    if cfg.train.export == "best" and cfg.data.val_split is None:
        raise ConfigError("train.export=best needs a validation split (data.val_split); or set train.export=last")
    if cfg.train.ema_decay is not None and not 0 < cfg.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must be in (0, 1) or null; got {cfg.train.ema_decay}")
    if cfg.data.input_size is not None and len(cfg.data.input_size) != 2:
        raise ConfigError(f"data.input_size must be [height, width]; got {cfg.data.input_size}")


def config_from_dict(data: Mapping, overrides: Sequence[str] = (), source: str = "config") -> Config:
    """A validated :class:`Config` from a nested mapping and ``key=value`` overrides."""
    cfg = Config()
    for key, value in data.items():
        _apply(cfg, [str(key)], value, source)
    for key_path, value in parse_overrides(overrides):
        _apply(cfg, key_path, value, "command line")
    _validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config file, apply ``key=value`` overrides, validate."""
    return config_from_dict(_read_file(Path(path)), overrides, source=str(path))
