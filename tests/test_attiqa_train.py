"""The shared training plumbing (attiqa_train): optimiser groups, schedule, precision,
the step loop's order and intervals, run folders, config aliases and names, file writers."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from typing import ClassVar, Dict

import pytest
import torch

from attiqa_train.config import ConfigError, load_config, with_current_keys
from attiqa_train.config_files import resolve_config_path, shipped_configs
from attiqa_train.files import sha256_file, write_csv, write_json
from attiqa_train.loop import TrainingRun, run_steps
from attiqa_train.optim import adamw, use_bf16, warmup_cosine, warmup_cosine_scheduler
from attiqa_train.sampling import StepBatchSampler, random_crop_box, step_generator


def _net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1))


def test_adamw_decays_weight_tensors_only():
    net = _net()
    opt = adamw(net.parameters(), lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4  # 2 biases, BN weight+bias


def test_adamw_keeps_per_group_learning_rates():
    net = _net()
    opt = adamw([{"params": net[0].parameters(), "lr": 1e-4}, {"params": net[2].parameters(), "lr": 1e-2}],
                lr=1e-3, weight_decay=0.05)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 1e-4, 1e-2, 1e-2]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.05, 0.0]


def test_a_decayed_weight_shrinks_and_a_bias_does_not():
    layer = torch.nn.Linear(2, 2)
    opt = adamw(layer.parameters(), lr=0.1, weight_decay=0.5)
    before_w, before_b = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer.weight.grad, layer.bias.grad = torch.zeros_like(layer.weight), torch.zeros_like(layer.bias)
    opt.step()
    assert torch.allclose(layer.weight, before_w * (1 - 0.1 * 0.5)) and torch.equal(layer.bias, before_b)


def test_warmup_cosine_shape():
    f = [warmup_cosine(s, warmup=4, total=12, min_ratio=0.1) for s in range(14)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0) and f[8] == pytest.approx(0.1 + 0.9 * 0.5)
    assert all(a >= b for a, b in zip(f[4:], f[5:])) and f[12] == f[13] == pytest.approx(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine_scheduler(opt, warmup=0, total=10)
    assert opt.param_groups[0]["lr"] == 2.0
    for _ in range(5):
        opt.step(), sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def _lrs(warmup, total, **kwargs):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_scheduler(opt, warmup=warmup, total=total, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(), sched.step()
    return lrs


def test_a_warmup_as_long_as_the_run_is_cut_to_a_tenth_of_it_and_said_in_one_line(capsys):
    # train.steps=40 of a recipe with warmup_steps: 500 (#37): the rate must reach its base.
    lrs = _lrs(500, 40)
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # 4 warmup steps, then the cosine
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train.warmup_steps=500 is not shorter than train.steps=40: "
                                                    "warming up over 4 steps instead")
    _lrs(40, 40, say=False)  # other ranks stay quiet
    assert _lrs(12, 5, key="x.warmup", total_key="x.steps") == pytest.approx(
        [warmup_cosine(s, warmup=0, total=5) for s in range(5)])
    assert capsys.readouterr().err.startswith("x.warmup=12 is not shorter than x.steps=5: no warmup instead")


def test_a_warmup_shorter_than_the_run_is_used_exactly_as_given(capsys):
    for warmup, total in ((0, 1), (4, 12), (39, 40), (500, 20000)):
        assert _lrs(warmup, total) == [warmup_cosine(s, warmup=warmup, total=total) for s in range(total)]
    assert capsys.readouterr().err == ""


def test_precision_choice():
    cpu = torch.device("cpu")
    assert use_bf16("auto", cpu) is False and use_bf16(True, cpu) is False
    assert use_bf16("bf16", cpu) is True and use_bf16("off", cpu) is False and use_bf16(False, cpu) is False
    with pytest.raises(ValueError, match="precision must be 'auto', 'bf16', 'off', true or false, got 'fp8'"):
        use_bf16("fp8", cpu)


def test_step_randomness_depends_on_seed_step_and_rank_only():
    a = torch.rand(3, generator=step_generator(1, 5, 0))
    assert torch.equal(a, torch.rand(3, generator=step_generator(1, 5, 0)))
    for other in (step_generator(2, 5, 0), step_generator(1, 6, 0), step_generator(1, 5, 1)):
        assert not torch.equal(a, torch.rand(3, generator=other))
    full = list(StepBatchSampler(10, 3, seed=1, steps=6))
    assert list(StepBatchSampler(10, 3, seed=1, start_step=4, steps=6)) == full[4:]
    g = torch.Generator().manual_seed(0)
    boxes = {random_crop_box(10, 7, 4, g) for _ in range(200)}
    assert all(0 <= t <= 6 and 0 <= left <= 3 for t, left in boxes) and (6, 3) in boxes and (0, 0) in boxes
    with pytest.raises(ValueError, match="a 8x8 crop does not fit a 7x10 image"):
        random_crop_box(10, 7, 8, g)


def test_run_steps_order_intervals_and_window_means():
    net = torch.nn.Linear(2, 1)
    opt = adamw(net.parameters(), lr=0.1, weight_decay=0.0)
    events = []
    x = torch.ones(4, 2)

    def step_fn(step):
        events.append(("step", step))
        loss = net(x).pow(2).mean() + 0 * step
        return loss, {"a": torch.tensor(float(step))}

    logged = []
    run_steps(step_fn, start=2, steps=7, optimizer=opt, clip_params=net.parameters(), grad_clip=1.0,
              after_step=lambda d: events.append(("after", d)), log_every=2,
              on_log=lambda d, means: logged.append((d, means["a"])), val_every=3,
              on_validate=lambda d: events.append(("val", d)), save_every=4,
              on_save=lambda d: events.append(("save", d)), progress=False)
    assert [e for e in events if e[0] == "step"] == [("step", s) for s in range(2, 7)]
    assert [e for e in events if e[0] in ("val", "save")] == [("val", 3), ("save", 4), ("val", 6), ("val", 7),
                                                               ("save", 7)]
    assert events.index(("after", 3)) < events.index(("val", 3))
    # windows: steps 2-3 (done 3,4 -> logged at 4: mean of 2, 3), 4-5 (at 6), 6 (at 7, the last)
    assert logged == [(4, 2.5), (6, 4.5), (7, 6.0)]


def test_training_run_renames_a_legacy_state_and_begins_from_it(tmp_path):
    out = tmp_path / "run"
    net = torch.nn.Linear(2, 2)
    with TrainingRun(out, command="test", config={"a": 1}, run_files=("config.yaml", "state.pt")) as run:
        assert run.begin(model=net) == 0
        run.save(5, model=net)
    (out / "state.pt").rename(out / "old.pt")
    with TrainingRun(out, command="test", config={"a": 1}, run_files=("config.yaml", "state.pt"), resume=True,
                     legacy_state_names=("old.pt",)) as run:
        assert run.begin(model=torch.nn.Linear(2, 2)) == 5
    assert (out / "state.pt").is_file() and not (out / "old.pt").exists()


def test_a_failed_setup_leaves_no_run_behind(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with TrainingRun(out, command="test", config={"a": 1}, run_files=("config.yaml", "state.pt")):
            raise RuntimeError("data missing")
    with TrainingRun(out, command="test", config={"a": 1}, run_files=("config.yaml", "state.pt")) as run:
        assert run.begin() == 0  # not refused as "already holds a run"
    assert (out / "config.yaml").is_file() and not (out / "attiqa.lock").exists()


@dataclass
class _Train:
    state_every: int = 10
    lr: float = 0.1
    KEY_ALIASES: ClassVar[Dict[str, str]] = {"ckpt_every": "state_every"}


@dataclass
class _Cfg:
    train: _Train = field(default_factory=_Train)


def test_renamed_keys_are_read_under_their_old_names(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  ckpt_every: 7\n")
    assert load_config(_Cfg, path).train.state_every == 7
    assert load_config(_Cfg, path, ["train.ckpt_every=9"]).train.state_every == 9
    assert load_config(_Cfg, path, ["train.state_every=3"]).train.state_every == 3  # an override wins
    assert with_current_keys(_Cfg, {"train": {"ckpt_every": 2, "lr": 1}}) == {"train": {"state_every": 2, "lr": 1}}
    path.write_text("train:\n  ckpt_every: 7\n  state_every: 8\n")
    with pytest.raises(ConfigError, match=r"\['train.ckpt_every'\] are set under their old and their new names"):
        load_config(_Cfg, path)


def test_values_are_set_before_the_one_validation():
    cfg = load_config(_Cfg, None, ["train.lr=0.5"], values={"train.lr": 0.25, "train.state_every": 4})
    assert (cfg.train.lr, cfg.train.state_every) == (0.25, 4)
    with pytest.raises(ConfigError, match="config key 'train.lr' expects a number, got 'fast'"):
        load_config(_Cfg, None, values={"train.lr": "fast"})
    with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
        load_config(_Cfg, None, values={"train.nope": 1})


# -- one training-config vocabulary (#37, item 6) ------------------------------------------

def _train_sections():
    import typing

    from enhancement.config import EnhanceTrainConfig
    from pretrain.training.config import PretrainTrainConfig

    return typing.get_type_hints(PretrainTrainConfig), typing.get_type_hints(EnhanceTrainConfig)


def _warnings(err: str):
    return [line for line in err.splitlines() if line.startswith("warning: deprecated config names")]


def test_keys_the_trainers_share_have_one_name_and_one_type():
    """A key in both trainers' ``train`` sections has one type; precision and the
    validation interval are ``train.amp`` (a bool) and ``train.val_every`` in both."""
    from enhancement.config import EnhanceConfig, EnhanceValConfig

    pretrain, enhance = _train_sections()
    shared = (set(pretrain) & set(enhance)) - {"KEY_ALIASES", "VALUE_ALIASES"}
    assert {"amp", "val_every", "state_every", "log_every", "steps", "batch_size", "lr", "warmup_steps"} <= shared
    assert {k: pretrain[k] for k in shared} == {k: enhance[k] for k in shared}
    assert pretrain["amp"] is bool and pretrain["val_every"] is int
    assert "every" not in {f.name for f in __import__("dataclasses").fields(EnhanceValConfig)}
    assert EnhanceConfig().train.amp is True


@pytest.mark.parametrize("override, message", [
    ("train.val_every=0", "train.val_every must be >= 1, got 0"),
    ("train.state_every=0", "train.state_every must be >= 1, got 0"),
    ("train.steps=0", "train.steps must be >= 1, got 0"),
    ("train.warmup_steps=-1", "train.warmup_steps must be >= 0, got -1"),
    ("train.lr=-1", "train.lr must be >= 0.0, got -1.0"),
    ("train.weight_decay=-0.5", "train.weight_decay must be >= 0.0, got -0.5"),
    ("train.grad_clip=-1", "train.grad_clip must be >= 0.0, got -1.0"),
])
def test_shared_keys_are_checked_by_one_rule_with_one_message(override, message):
    from enhancement.config import EnhanceConfig
    from pretrain.training.config import PretrainConfig

    for cls in (PretrainConfig, EnhanceConfig):
        with pytest.raises(ConfigError) as info:
            load_config(cls, None, [override])
        assert str(info.value) == f"invalid config section 'train': {message}", cls.__name__


def test_each_trainer_keeps_its_own_stricter_rules():
    from attiqa_train.config import TRAIN_MINIMUMS
    from enhancement.config import EnhanceConfig
    from pretrain.training.config import PretrainConfig

    assert TRAIN_MINIMUMS["batch_size"] == 1 and TRAIN_MINIMUMS["lr"] == 0.0
    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 4, got 2"):  # the ranking loss needs pairs
        load_config(PretrainConfig, None, ["train.batch_size=2"])
    assert load_config(EnhanceConfig, None, ["train.batch_size=2"]).train.batch_size == 2
    assert load_config(PretrainConfig, None, ["train.lr=0"]).train.lr == 0.0  # lr 0 keeps the weights
    with pytest.raises(ConfigError, match=r"train.lr must be > 0, got 0.0"):  # the schedule divides by it
        load_config(EnhanceConfig, None, ["train.lr=0"])


def test_earlier_enhance_names_and_values_still_load_with_one_warning_line(tmp_path, capsys):
    from enhancement.config import EnhanceConfig

    path = tmp_path / "old.yaml"
    path.write_text("train:\n  amp: auto\n  ckpt_every: 3\nval:\n  every: 7\n  crop_size: 64\n")
    cfg = load_config(EnhanceConfig, path)
    assert (cfg.train.amp, cfg.train.val_every, cfg.train.state_every, cfg.val.crop_size) == (True, 7, 3, 64)
    (line,) = _warnings(capsys.readouterr().err)
    assert str(path) in line
    assert "val.every -> train.val_every" in line and "train.amp: auto -> true" in line
    assert "train.ckpt_every -> train.state_every" in line
    # --set with the earlier names and values; the file's own warning and --set's share the line.
    cfg = load_config(EnhanceConfig, path, ["val.every=9", "train.amp='off'"])
    assert (cfg.train.val_every, cfg.train.amp) == (9, False)
    (line,) = _warnings(capsys.readouterr().err)
    assert "--set: val.every -> train.val_every, train.amp: 'off' -> false" in line
    for old, new in (("bf16", True), ("off", False), ("false", False), ("true", True)):  # YAML: off is false
        assert load_config(EnhanceConfig, None, [f"train.amp={old}"]).train.amp is new
    capsys.readouterr()
    with pytest.raises(ConfigError, match="config key 'train.amp' expects true/false, got 'fp8'"):
        load_config(EnhanceConfig, None, ["train.amp=fp8"])
    path.write_text("train:\n  val_every: 5\nval:\n  every: 7\n")
    with pytest.raises(ConfigError, match=r"\['val.every'\] are set under their old and their new names"):
        load_config(EnhanceConfig, path)
    # The current names say nothing; nor do the shipped configs.
    load_config(EnhanceConfig, None, ["train.val_every=4", "train.amp=false"])
    for name in shipped_configs():
        if name.startswith(("enhance_", "pretrain_")):
            from enhancement.config import EnhanceConfig as E
            from pretrain.training.config import PretrainConfig as P

            load_config(E if name.startswith("enhance_") else P, name)
    assert not _warnings(capsys.readouterr().err)


def test_a_saved_enhance_config_with_earlier_names_is_read_under_the_current_ones():
    """What a checkpoint or ``config.yaml`` recorded (``val.every``, ``amp: auto``) reads
    as the current config: the shipped enhancer's recipe test and ``--resume`` use this."""
    from attiqa_train.config import config_to_dict
    from enhancement.config import EnhanceConfig

    old = config_to_dict(EnhanceConfig())
    old["val"]["every"] = old["train"].pop("val_every")
    old["train"]["amp"] = "auto"
    old["train"]["ckpt_every"] = old["train"].pop("state_every")
    notes = []
    assert with_current_keys(EnhanceConfig, old, notes=notes) == config_to_dict(EnhanceConfig())
    assert notes == ["val.every -> train.val_every", "train.amp: auto -> true", "train.ckpt_every -> train.state_every"]
    assert "every" in old["val"] and old["train"]["amp"] == "auto"  # the input is left as it was


def test_resume_compares_a_saved_config_under_its_current_names(tmp_path):
    import yaml

    from attiqa_train.config import config_to_dict
    from attiqa_train.rundir import RunFolderError, prepare_run_dir
    from enhancement.config import EnhanceConfig
    from enhancement.train import RESUME_FREE_KEYS

    out = tmp_path / "run"
    out.mkdir()
    (out / "state.pt").write_bytes(b"state")
    saved = config_to_dict(EnhanceConfig())
    saved["val"]["every"] = saved["train"].pop("val_every")
    saved["train"]["amp"] = "auto"
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    now = config_to_dict(load_config(EnhanceConfig, None, ["train.val_every=50"]))  # a free key may change
    args = dict(command="attiqa-enhance train", run_files=("config.yaml", "state.pt"), state_name="state.pt",
                resume=True, overwrite=False, config=now, free_keys=RESUME_FREE_KEYS,
                defaults=config_to_dict(EnhanceConfig()))
    with pytest.raises(RunFolderError, match=r"differs from the run's .* in \['train.amp'\]"):
        prepare_run_dir(out, **args)  # without the config class, "auto" is not true
    prepare_run_dir(out, **args, config_class=EnhanceConfig).release()
    now["train"]["amp"] = False
    with pytest.raises(RunFolderError, match=r"in \['train.amp'\], which change the result"):
        prepare_run_dir(out, **args | {"config": now}, config_class=EnhanceConfig)


def test_shipped_configs_are_found_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert "pretrain_synthetic" in shipped_configs() and "enhance_lowlight" in shipped_configs()
    for name in ("pretrain_synthetic", "pretrain_synthetic.yaml", "configs/pretrain_synthetic.yaml"):
        assert resolve_config_path(name).read_text().startswith("# Offline recipe")
    local = tmp_path / "pretrain_synthetic.yaml"
    local.write_text("model: {}\n")
    assert resolve_config_path("pretrain_synthetic.yaml").resolve() == local  # a path wins over a name
    with pytest.raises(FileNotFoundError, match=r"config file not found: nope \(not a file, nor a shipped config; "
                                                r"shipped: .*pretrain_synthetic"):
        resolve_config_path("nope")


def test_writers_are_atomic_and_round_trip(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1.5, "p": tmp_path})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1.5, "p": str(tmp_path)}
    rows = [{"a": 1, "b": 0.123456789}, {"b": 2, "c": "z"}]
    write_csv(tmp_path / "r.csv", rows, fmt=lambda v: f"{v:.2f}" if isinstance(v, float) else v)
    with open(tmp_path / "r.csv") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "0.12", "c": ""}, {"a": "", "b": "2", "c": "z"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "r.csv"]  # no temp files left
    assert sha256_file(tmp_path / "a.json") == __import__("hashlib").sha256((tmp_path / "a.json").read_bytes()).hexdigest()
