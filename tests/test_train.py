"""Training: config files and overrides, optimisers and schedules, checkpoints, the trainer, exact resume after a kill,
and a two-process DDP run (gloo on CPU)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from rwkv_vision.evaluate import evaluate, eval_preprocessing
from rwkv_vision.pipelines import load_model
from rwkv_vision.train import (SAM, ConfigError, ModelEMA, Trainer, build_dataset, build_optimizer, build_scheduler,
                               config_from_dict, load_config)
from rwkv_vision.train.checkpoint import atomic_save, get_rng_state, load_checkpoint_file, set_rng_state
from rwkv_vision.train.config import OptimConfig, ScheduleConfig, parse_value
from rwkv_vision.train.distributed import ShardSampler, TrainSampler
from rwkv_vision.train.optim import param_groups

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Happy", "Sad", "Angry")


def make_faces(root: Path, train: int = 16, test: int = 6, size: int = 16, seed: int = 0) -> Path:
    """A learnable stand-in for a face data set: ``root/{train,test}/<class>/*.png``, grey noise with a bright block
    whose horizontal position is the class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 80, (size, size), dtype=np.uint8)
                left = c * size // 3
                a[size // 3:2 * size // 3, left:left + size // 3 + 1] = 230
                Image.fromarray(a).save(folder / f"{i}.png")
    return root


def tiny_config(data_root: Path, output: Path, **sections) -> dict:
    """A config dict for a 30k-parameter RWKVViT on :func:`make_faces` data; ``sections`` update the sections."""
    cfg = {
        "seed": 0, "output": str(output),
        "model": {"name": "rwkv_vit_nano", "args": {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}},
        "data": {"name": "imagefolder", "args": {"root": str(data_root)}, "batch_size": 8, "input_size": [16, 16],
                 "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "augment": {"scale": None, "hflip": 0.0},
        "optim": {"lr": 1e-2},
        "schedule": {"warmup_epochs": 0},
        "train": {"epochs": 2, "progress": "off"},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values} if isinstance(values, dict) else values
    return cfg


@pytest.fixture(scope="module")
def faces(module_tmp) -> Path:
    return make_faces(module_tmp / "faces")


# ---------------------------------------------------------------------------------------------- config


def test_yaml_toml_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  name: rwkv_vit_nano\ndata:\n  name: ckplus\n  args: {root: x}\n"
                                     "optim:\n  lr: 3.5e-5\n  betas: [0.8, 0.9]\n")
    (tmp_path / "a.toml").write_text('[model]\nname = "rwkv_vit_nano"\n[data]\nname = "ckplus"\nargs = {root = "x"}\n'
                                     "[optim]\nlr = 3.5e-5\nbetas = [0.8, 0.9]\n")
    from_yaml, from_toml = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    assert from_yaml == from_toml
    assert from_yaml.optim.lr == 3.5e-5  # YAML 1.1 reads 3.5e-5 as a string: coerced by the schema
    cfg = load_config(tmp_path / "a.yaml", ["optim.lr=1e-3", "model.args.img_size=64", "train.ema_decay=0.99",
                                            "augment.scale=[0.5,1]", "data.val_split=null", "train.export=last",
                                            "data.args.fold=3", "optim.sam_rho=0.05"])
    assert cfg.optim.lr == 1e-3 and cfg.model.args == {"img_size": 64} and cfg.train.ema_decay == 0.99
    assert cfg.augment.scale == [0.5, 1.0] and cfg.data.val_split is None and cfg.data.args["fold"] == 3
    assert parse_value("abc") == "abc" and parse_value("None") is None and parse_value("true") is True


@pytest.mark.parametrize("override, message", [
    (["optim.lrr=1"], "optim.lrr.*did you mean 'lr'"),
    (["trian.epochs=1"], "trian"),
    (["optim.lr=fast"], "optim.lr.*a number"),
    (["train.epochs=1.5"], "an integer"),
    (["optim.name=adagrad"], "optim.name"),
    (["data.args.colour=1"], "colour.*ckplus"),
    (["data.name=nyu_csv", "data.args={}"], "depth data set"),
    (["optim.lr"], "key=value"),
    (["train.precision=fp16", "optim.sam_rho=0.05"], "SAM"),
])
def test_config_errors_name_the_key(tmp_path, override, message):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: rwkv_vit_nano}\ndata: {name: ckplus, args: {root: x}}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, override)


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: rwkv_vit_nano}\ndata: {name: ckplus, args: {root: x}}\nschedule: {warmup: 3}\n")
    with pytest.raises(ConfigError, match=r"schedule.warmup.*c\.yaml.*warmup_epochs"):
        load_config(path)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.model.name and cfg.data.name


def test_poster_v2_recipe_config():
    cfg = load_config(REPO / "configs" / "poster_v2_rafdb.yaml")
    assert (cfg.optim.name, cfg.optim.sam_rho, cfg.optim.lr) == ("adam", 0.05, 3.5e-5)
    assert (cfg.schedule.name, cfg.schedule.gamma) == ("exponential", 0.98)
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.loss.label_smoothing) == (144, 200, 0.0)
    assert cfg.data.input_size == [224, 224] and cfg.augment.erasing > 0 and cfg.augment.hflip == 0.5


# ---------------------------------------------------------------------------------------------- optimisation


def test_sam_step_uses_the_gradient_at_the_perturbed_point():
    a = torch.tensor([1.0, 3.0])
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SAM([w], torch.optim.SGD, rho=0.1, lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (a * w ** 2).sum()
        loss.backward()
        return loss

    closure()
    g = 2 * a * w.detach()
    w_adv = w.detach() + 0.1 * g / g.norm()
    expected = w.detach() - 0.5 * 2 * a * w_adv
    opt.step(closure)
    torch.testing.assert_close(w.detach(), expected)
    assert opt.state_dict()["param_groups"][0]["lr"] == 0.5  # the base optimiser's state


def test_schedules():
    def lrs(name, **kw):
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1)
        sched = build_scheduler(opt, ScheduleConfig(name=name, **kw), 0.1, epochs=4, steps_per_epoch=5)
        out = []
        for _ in range(20):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    cos = lrs("cosine", warmup_epochs=1, warmup_factor=0.1, min_lr=0.001)
    assert cos[0] == pytest.approx(0.01) and cos[5] == pytest.approx(0.1) and max(cos) == pytest.approx(0.1)
    assert cos[19] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + np.cos(np.pi * 14 / 15)))
    exp = lrs("exponential", gamma=0.5)
    assert exp[:5] == [0.1] * 5 and exp[5] == pytest.approx(0.05) and exp[19] == pytest.approx(0.0125)
    one = lrs("onecycle", pct_start=0.25)
    assert max(one) == pytest.approx(0.1) and one[0] < 0.01 and one[19] < 1e-4


def test_scheduler_and_optimizer_state_load_with_weights_only(tmp_path):
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, OptimConfig(name="adam", sam_rho=0.05))
    sched = build_scheduler(opt, ScheduleConfig(name="onecycle"), 1e-3, epochs=2, steps_per_epoch=3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step(lambda: model(torch.randn(4, 3)).sum())
    sched.step()
    atomic_save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.pt")
    state = load_checkpoint_file(tmp_path / "s.pt")
    fresh = build_optimizer(model, OptimConfig(name="adam", sam_rho=0.05))
    fresh.load_state_dict(state["opt"])
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_weight_decay_groups():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups(model, 0.05)
    assert [p.shape for p in decay["params"]] == [(4, 4)] and no_decay["weight_decay"] == 0
    assert len(param_groups(model, 0.05, decay_1d=True)[0]["params"]) == 4


def test_ema_follows_the_formula():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # update 1: d = min(0.9, 2 / 11)
    d = 2 / 11
    torch.testing.assert_close(ema.module.weight, d * start + (1 - d) * model.weight.detach())
    assert not ema.module.weight.requires_grad and not ema.module.training


# ---------------------------------------------------------------------------------------------- checkpoints, sampling


def test_atomic_save_never_leaves_a_torn_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"x": torch.ones(3)}, path)
    with pytest.raises(Exception):
        atomic_save({"x": lambda: None}, path)  # cannot be pickled: fails midway
    assert torch.equal(load_checkpoint_file(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    atomic_save({"rng": get_rng_state()}, tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(2), torch.randn(1))
    set_rng_state(load_checkpoint_file(tmp_path / "rng.pt")["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2), torch.randn(1))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2]) and torch.equal(first[3], again[3])


def test_samplers_shard_and_repeat():
    a = TrainSampler(10, seed=1, rank=0, world_size=2)
    b = TrainSampler(10, seed=1, rank=1, world_size=2)
    assert sorted(list(a) + list(b)) == list(range(10)) and len(a) == 5
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    weights = torch.tensor([0.0] * 9 + [1.0])
    assert set(TrainSampler(10, seed=0, weights=weights)) == {9}
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))


# ---------------------------------------------------------------------------------------------- the trainer


def test_trainer_learns_and_exports(faces, tmp_path):
    cfg = config_from_dict(tiny_config(faces, tmp_path / "run", train={"epochs": 6, "progress": "off"}))
    summary = Trainer(cfg).fit()
    assert summary["test"]["top1"] >= 0.8 and summary["test"]["count"] == 18
    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 7)) and log[-1]["train"]["loss"] < log[0]["train"]["loss"]
    assert json.loads((run / "results.json").read_text())["test"]["top1"] == summary["test"]["top1"]
    model = load_model(run / "model")
    assert model.pretrained_cfg["label_names"] == ["anger", "happiness", "sadness"]
    assert model.pretrained_cfg["input_size"] == (3, 16, 16)
    card = (run / "model" / "README.md").read_text()
    assert f"{100 * summary['test']['top1']:.4g}" in card and "imagefolder" in card
    # the exported model scores the same as the trainer measured
    test = build_dataset("imagefolder", {"root": str(faces)}, "test", eval_preprocessing(model, "classification"))
    assert evaluate(model, test, "classification")["confusion_matrix"] == summary["test"]["confusion_matrix"]


def test_trainer_options_accumulation_sam_ema_bf16_balanced(faces, tmp_path):
    cfg = config_from_dict(tiny_config(
        faces, tmp_path / "run", optim={"lr": 1e-2, "name": "sgd", "sam_rho": 0.05, "accumulate": 2,
                                        "clip_grad": 1.0},
        train={"epochs": 1, "progress": "off", "precision": "bf16", "ema_decay": 0.9, "export": "last"},
        data={"balanced_sampler": True}, schedule={"name": "exponential"}))
    trainer = Trainer(cfg)
    summary = trainer.fit()
    assert trainer.step == 3  # 48 samples / batch 8 = 6 micro-batches, 2 per step
    assert summary["exported_epoch"] == 1 and np.isfinite(summary["test"]["loss"])
    ckpt = load_checkpoint_file(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["ema"]["updates"] == 3
    exported = load_model(tmp_path / "run" / "model")
    for name, value in exported.state_dict().items():  # the EMA weights are the ones exported
        torch.testing.assert_close(value, ckpt["ema"]["module"][name])


def test_tensorboard_is_optional(faces, tmp_path):
    cfg = config_from_dict(tiny_config(faces, tmp_path / "run", train={"epochs": 1, "progress": "off",
                                                                       "tensorboard": True}))
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            Trainer(cfg).fit()
        assert not (tmp_path / "run").exists()  # refused before anything was written
    else:
        Trainer(cfg).fit()
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_listing_with_a_missing_class_fails_before_training(faces, tmp_path):
    cfg = config_from_dict(tiny_config(faces, tmp_path / "run", data={"args": {"root": str(faces),
                                                                               "classes": ["Happy", "Bored"]}}))
    with pytest.raises(FileNotFoundError, match="Bored"):
        Trainer(cfg).fit()
    assert not (tmp_path / "run").exists()


_KILL_AFTER_FIRST_EPOCH = """
import json, os, signal, sys
from rwkv_vision.train import Trainer, config_from_dict

def kill(trainer, record):
    if record["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a power cut or the OOM killer

Trainer(config_from_dict(json.loads(sys.argv[1])), callbacks=[kill]).fit()
"""


def _strip_times(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r["train"] = {k: v for k, v in r["train"].items() if k not in ("seconds", "images_per_s")}
    return records


def test_resume_after_kill_ends_with_the_same_weights(faces, tmp_path):
    sections = dict(model={"name": "rwkv_vit_nano", "args": {"img_size": 16, "patch_size": 4, "embed_dim": 32,
                                                             "depth": 2, "drop_path_rate": 0.2}},
                    augment={"scale": [0.6, 1.0], "rotation": 10, "erasing": 0.5, "brightness": 0.2},
                    optim={"lr": 5e-3, "accumulate": 2, "clip_grad": 1.0},
                    schedule={"name": "cosine", "warmup_epochs": 1},
                    loss={"label_smoothing": 0.1},
                    train={"epochs": 3, "progress": "off", "ema_decay": 0.9})
    full = tiny_config(faces, tmp_path / "full", **sections)
    Trainer(config_from_dict(full)).fit()

    killed = tiny_config(faces, tmp_path / "killed", **sections)
    proc = subprocess.run([sys.executable, "-c", _KILL_AFTER_FIRST_EPOCH, json.dumps(killed)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert load_checkpoint_file(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    assert not (tmp_path / "killed" / "results.json").exists()
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp")]

    config_file = tmp_path / "killed.json"
    config_file.write_text(json.dumps(killed))
    from rwkv_vision.cli import main
    assert main(["train", "--config", str(config_file), "--resume"]) == 0

    a = load_checkpoint_file(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint_file(tmp_path / "killed" / "checkpoint.pt")
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (3, 9)
    for part in ("model", "scheduler"):
        assert a[part].keys() == b[part].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name  # bit-exact
        assert torch.equal(a["ema"]["module"][name], b["ema"]["module"][name]), name
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
    assert _strip_times(tmp_path / "full" / "metrics.jsonl") == _strip_times(tmp_path / "killed" / "metrics.jsonl")

    changed = tiny_config(faces, tmp_path / "killed", **{**sections, "optim": {**sections["optim"], "lr": 1e-3}})
    with pytest.raises(ConfigError, match="optim.lr"):
        Trainer(config_from_dict(changed)).fit(resume=True)


_DDP_SCRIPT = """
import hashlib, json, os, sys
import torch
from rwkv_vision.train import Trainer, config_from_dict

def fingerprint(trainer, record):
    data = b"".join(p.detach().cpu().numpy().tobytes() for p in trainer.model.parameters())
    name = f"rank{trainer.ctx.rank}-epoch{record['epoch']}.txt"
    with open(os.path.join(sys.argv[2], name), "w") as f:
        f.write(hashlib.sha256(data).hexdigest() + " " + str(torch.rand(()).item()))

Trainer(config_from_dict(json.loads(open(sys.argv[1]).read())), callbacks=[fingerprint]).fit()
"""


def test_two_process_ddp_with_gloo(faces, tmp_path):
    cfg = tiny_config(faces, tmp_path / "run", train={"epochs": 2, "progress": "off"}, data={"batch_size": 4})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "ddp.py").write_text(_DDP_SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "ddp.py"), str(tmp_path / "cfg.json"), str(marks)],
                          cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for epoch in (1, 2):
        (w0, r0), (w1, r1) = ((marks / f"rank{r}-epoch{epoch}.txt").read_text().split() for r in (0, 1))
        assert w0 == w1  # the same weights on both ranks after every epoch
        assert r0 != r1  # but different random streams (augmentation, dropout)
    run = tmp_path / "run"
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 2  # written by rank 0 only
    assert log[0]["step"] == 6  # 48 samples / (2 ranks x batch 4)
    ckpt = load_checkpoint_file(run / "checkpoint.pt")
    assert len(ckpt["rng"]) == 2
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["count"] == 18  # sharded without padding: every test image once
    model = load_model(run / "model")
    test = build_dataset("imagefolder", {"root": str(faces)}, "test", eval_preprocessing(model, "classification"))
    assert evaluate(model, test, "classification")["confusion_matrix"] == results["test"]["confusion_matrix"]
