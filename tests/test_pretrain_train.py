"""The pretraining objective and `attiqa-pretrain train`: gradients, resume, export, DDP."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attiqa_loss import AttiqaLoss, create_attiqa_net, read_checkpoint_metadata
from attiqa_train.config import ConfigError, load_config
from pretrain.synthetic.teacher import SyntheticTeacher
from pretrain.training.config import PretrainConfig
from pretrain.training.objectives import (
    calibration_loss,
    consistency_loss,
    pretrain_losses,
    ranking_loss,
    specificity_loss,
)
from pretrain.training.train import train

from helpers import make_texture

NAN = math.nan


def test_ranking_loss_orders_and_masks():
    y = torch.tensor([[1.0, NAN], [0.0, NAN]])
    g = torch.zeros(2, dtype=torch.long)
    right = torch.tensor([[0.9, 0.2], [0.1, 0.9]])
    wrong = torch.tensor([[0.1, 0.2], [0.9, 0.9]])
    assert ranking_loss(right, y, g, margin=0.5) == 0
    # reversed: hinge = margin * 1 - (0.1 - 0.9) = 1.3
    assert torch.isclose(ranking_loss(wrong, y, g, margin=0.5), torch.tensor(1.3))
    # Column 2 carries no labels, so its scores never matter.
    assert ranking_loss(torch.tensor([[0.9, 0.0], [0.1, 1.0]]), y, g) == 0
    # Different groups are never compared.
    assert ranking_loss(wrong, y, torch.tensor([0, 1])) == 0
    # Pairs closer than delta are ignored.
    assert ranking_loss(wrong, torch.tensor([[0.52, NAN], [0.5, NAN]]), g, delta=0.05) == 0


def test_calibration_consistency_specificity_known_values():
    logits = torch.tensor([[0.0, 2.0]])
    labels = torch.tensor([[0.5, NAN]])
    assert torch.isclose(calibration_loss(logits, labels), torch.tensor(math.log(2.0)))
    s = torch.tensor([[0.2, 0.5], [0.6, 0.5]])
    assert torch.isclose(consistency_loss(s, torch.tensor([[0, 1]])), torch.tensor(0.2))
    # Attribute 0 is the target (free to vary); attribute 1 is off-target and constant.
    assert specificity_loss(s, torch.tensor([0, 0]), torch.tensor([0, 0])) == 0
    assert torch.isclose(specificity_loss(s, torch.tensor([0, 0]), torch.tensor([1, 1])), torch.tensor(0.2))


def test_every_head_parameter_gets_a_gradient_from_each_term():
    torch.manual_seed(0)
    net = create_attiqa_net("test_resnet")
    photos = [(make_texture(120, 140, s) * 255).byte() for s in range(2)]
    batch = SyntheticTeacher(photos, crop=48).sample(10, torch.Generator().manual_seed(0))
    logits = net.forward_head(net.forward_features(batch.images))
    terms = pretrain_losses(logits, batch.labels, batch.groups, pairs=batch.pairs, target=batch.target)
    assert set(terms) == {"ranking", "calibration", "consistency", "specificity"}
    for name, term in terms.items():
        net.zero_grad()
        term.backward(retain_graph=True)
        grads = [p.grad for p in net.backbone.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"{name} sends no gradient to the backbone"
    net.zero_grad()
    sum(terms.values()).backward()
    for name, p in net.heads.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Heads of attributes degraded in this batch all learn.
    learned = {n.split(".")[0] for n, p in net.heads.named_parameters() if p.grad.abs().sum() > 0}
    assert len(learned) >= 3


@pytest.fixture
def photo_dir(make_photo_dir):
    return make_photo_dir(6, 96, 112)


def _cfg(photo_dir, steps, **extra):
    sets = [
        f"train.steps={steps}", "train.batch_size=8", "train.state_every=2", "train.val_every=1000",
        "train.warmup_steps=2", "train.threads=1", "model.backbone=test_resnet", "synthetic.crop=48",
        "synthetic.holdout_every=3", "val.max_images=1", "val.levels=3",
    ] + [f"{k}={v}" for k, v in extra.items()]
    cfg = load_config(PretrainConfig, None, sets)
    cfg.synthetic.images = [str(photo_dir)]
    return cfg


def test_train_exports_a_checkpoint_that_attiqaloss_loads(photo_dir, tmp_path):
    out = train(_cfg(photo_dir, 3), tmp_path / "run", progress=False)
    assert out == tmp_path / "run" / "checkpoint.safetensors"
    meta = read_checkpoint_metadata(out)
    assert meta["backbone"] == "test_resnet"
    assert meta["training"]["teachers"] == ["synthetic"]
    assert len(meta["training"]["holdout_files"]) == 2
    loss = AttiqaLoss(checkpoint=out)
    x = torch.rand(2, 3, 40, 40, requires_grad=True)
    loss(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert any((tmp_path / "run" / "tb").iterdir())


def test_val_max_images_zero_trains_without_validation(photo_dir, tmp_path):
    out = train(_cfg(photo_dir, 2, **{"val.max_images": 0}), tmp_path / "run", progress=False)
    assert read_checkpoint_metadata(out)["training"]["val_srcc"] in (None, {})


def test_anti_aliased_backbone_round_trips_through_the_checkpoint(photo_dir, tmp_path):
    from attiqa_loss import load_attiqa
    from attiqa_loss.network import CeilAvgPool2d

    out = train(_cfg(photo_dir, 2, **{"model.aa_layer": "avg"}), tmp_path / "run", progress=False)
    assert read_checkpoint_metadata(out)["backbone_kwargs"] == {"aa_layer": "avg"}
    net = load_attiqa(out)
    assert any(isinstance(m, CeilAvgPool2d) for m in net.backbone.modules())
    assert not any(isinstance(m, CeilAvgPool2d) for m in create_attiqa_net("test_resnet").backbone.modules())
    for side in (48, 45, 77):  # odd sizes too: the pooled and shortcut paths must agree
        assert torch.isfinite(net(torch.rand(1, 3, side, side + 2))).all()


def test_tone_normalised_model_trains_with_alignment_and_round_trips(photo_dir, tmp_path):
    """model.normalize_tone with the alignment term (double backward through the tone
    normalisation): the exported file is marked toned and loads as such."""
    from attiqa_loss import load_attiqa

    out = train(_cfg(photo_dir, 2, **{"model.normalize_tone": True, "hardening.alignment": 2}), tmp_path / "run",
                progress=False)
    assert read_checkpoint_metadata(out)["normalization"]["tone"] is True
    net = load_attiqa(out)
    assert net.normalize_tone and torch.isfinite(net(torch.rand(1, 3, 48, 48))).all()


def test_init_checkpoint_of_another_tone_setting_is_refused(photo_dir, tmp_path):
    plain = train(_cfg(photo_dir, 1), tmp_path / "plain", progress=False)
    with pytest.raises(ValueError, match=r"model.init_checkpoint .* does not fit model.backbone / model.aa_layer / "
                                         r"model.normalize_tone of this config"):
        train(_cfg(photo_dir, 1, **{"model.normalize_tone": True, "model.init_checkpoint": str(plain)}),
              tmp_path / "toned", progress=False)


@pytest.mark.parametrize("hardening", [{}, {"hardening.anchors": 2, "hardening.adversarial": 2, "hardening.edge_pairs": 1,
                                      "hardening.edge_invariance": 1.0, "hardening.ramp_contrast": True,
                                      "hardening.full_labels": True, "hardening.large_anchors": 1,
                                      "hardening.large_anchor_size": 64}],
                         ids=["plain", "hardened"])
def test_resume_replays_an_uninterrupted_run_exactly(photo_dir, tmp_path, monkeypatch, hardening):
    import attiqa_train.loop as loop_module
    import pretrain.training.step as step_module

    full = train(_cfg(photo_dir, 4, **hardening), tmp_path / "full", progress=False)

    # Kill the second run right after its step-2 state is on disk.
    real_save = loop_module.save_state

    def save_then_die(path, *, step, **objects):
        real_save(path, step=step, **objects)
        if step == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(loop_module, "save_state", save_then_die)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(photo_dir, 4, **hardening), part, progress=False)
    assert not (part / "checkpoint.safetensors").exists()
    monkeypatch.setattr(loop_module, "save_state", real_save)
    # Count the steps the resumed run executes: it must continue at step 2, not restart
    # (a restart from the same seed would also end with equal weights).
    steps_run = []
    real_gen = step_module.step_generator
    monkeypatch.setattr(step_module, "step_generator", lambda seed, step, rank=0: steps_run.append(step) or real_gen(seed, step, rank))
    resumed = train(_cfg(photo_dir, 4, **hardening), part, resume=True, progress=False)
    assert steps_run == [2, 3]
    a, b = load_file(str(full)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_synthetic_families_choose_what_the_teacher_trains_on(photo_dir, tmp_path, monkeypatch):
    import pretrain.training.teachers as teachers_module
    from pretrain.diagnostics.validity_report import trained_families

    seen = {}
    real = teachers_module.SyntheticTeacher

    def spy(*args, **kwargs):
        teacher = real(*args, **kwargs)
        seen["families"] = teacher.families
        return teacher

    monkeypatch.setattr(teachers_module, "SyntheticTeacher", spy)
    cfg = _cfg(photo_dir, 2, **{"synthetic.families": "{sharpness: [gaussian, wavelet], noisiness: []}",
                                "train.val_every": 2})
    out = train(cfg, tmp_path / "fam", progress=False)
    assert seen["families"]["sharpness"] == ["gaussian", "wavelet"] and seen["families"]["noisiness"] == []
    assert seen["families"]["contrast"] == ["linear"]  # left out: the defaults
    meta = read_checkpoint_metadata(out)
    assert set(meta["training"]["val_srcc"]) == {"sharpness", "contrast", "brightness", "colorfulness"}
    trained = trained_families(meta)
    assert trained["sharpness"] == ["gaussian", "wavelet"] and trained["noisiness"] == []
    with pytest.raises(ValueError, match=r"synthetic.families.sharpness: unknown family 'box'; known: \['gaussian'"):
        train(_cfg(photo_dir, 1, **{"synthetic.families": "{sharpness: [box]}"}), tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match=r"synthetic.families: unknown attribute 'hue'"):
        train(_cfg(photo_dir, 1, **{"synthetic.families": "{hue: [gaussian]}"}), tmp_path / "bad", progress=False)


def test_config_rejects_unknown_keys_and_missing_teacher(photo_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'train.stepz'"):
        load_config(PretrainConfig, None, ["train.stepz=3"])
    cfg = _cfg(photo_dir, 1)
    cfg.synthetic.enabled = False
    with pytest.raises(ValueError, match="enable at least one teacher"):
        train(cfg, tmp_path / "x", progress=False)
    cfg = _cfg(photo_dir, 1)
    cfg.synthetic.images = []
    with pytest.raises(ValueError, match="needs photos"):
        train(cfg, tmp_path / "x", progress=False)


def test_photo_problems_are_reported_before_the_network_is_built(photo_dir, tmp_path, monkeypatch, capsys):
    # A folder without usable photos must not wait for (or download) the backbone (#37).
    import pretrain.training.train as train_module

    built = []
    real = train_module.create_attiqa_net
    def probe(*args, **kwargs):
        built.append(args)
        print("NETWORK BUILT", file=sys.stderr)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "create_attiqa_net", probe)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    cfg = _cfg(empty, 1)
    with pytest.raises(ValueError, match="no usable photos for the synthetic teacher"):
        train(cfg, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="synthetic.holdout_every=1 holds out every usable photo"):
        train(_cfg(photo_dir, 1, **{"synthetic.holdout_every": 1}), tmp_path / "y", progress=False)
    assert built == []
    # A warmup longer than the run is said before the network is built too, once.
    train(_cfg(photo_dir, 1, **{"val.max_images": 0}), tmp_path / "z", progress=False)
    err = capsys.readouterr().err
    said = "train.warmup_steps=2 is not shorter than train.steps=1: no warmup instead"
    assert built == [("test_resnet",)] and err.count(said) == 1 and err.index(said) < err.index("NETWORK BUILT")


def test_cli_help_and_shipped_configs_load():
    from pretrain.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(PretrainConfig, root / "configs" / "pretrain_synthetic.yaml")
    assert cfg.model.backbone == "resnet10t" and cfg.synthetic.enabled and not cfg.clip.enabled


@pytest.mark.slow
def test_two_process_torchrun_trains_on_cpu(photo_dir, tmp_path, free_port):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port), "-m", "pretrain.cli", "train", "--out", str(out),
        "--images", str(photo_dir), "--no-progress",
        "--set", "train.steps=2", "--set", "train.batch_size=8", "--set", "model.backbone=test_resnet",
        "--set", "synthetic.crop=48", "--set", "train.threads=1", "--set", "train.val_every=1000",
        "--set", "synthetic.holdout_every=0", "--set", "train.device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_checkpoint_metadata(out / "checkpoint.safetensors")
    assert meta["training"]["world_size"] == 2


@pytest.mark.parametrize("with_synthetic, hardened", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["clip", "clip+synthetic", "clip-hardened", "clip+synthetic-hardened"])
def test_train_from_clip_labels_end_to_end(photo_dir, tmp_path, with_synthetic, hardened):
    """`label` (tiny random CLIP) -> `train --labels` -> a checkpoint AttiqaLoss loads; the
    hardening terms work with the CLIP teacher alone and beside the synthetic one."""
    from pretrain.cli import main

    root = Path(__file__).resolve().parents[1]
    labels = tmp_path / "labels"
    assert main(["label", "--images", str(photo_dir), "--out", str(labels), "--clip-model",
                 str(root / "configs" / "open_clip_tiny.json"), "--clip-pretrained", "none",
                 "--set", "label.workers=0"]) == 0
    hard = {"hardening.anchors": 2, "hardening.adversarial": 2} if hardened else {}
    cfg = _cfg(photo_dir, 2, **{"clip.crop": 64, "clip.fraction": 0.5}, **hard)
    cfg.clip.enabled, cfg.clip.labels = True, str(labels)
    cfg.synthetic.enabled = with_synthetic
    out = train(cfg, tmp_path / "run", progress=False)
    meta = read_checkpoint_metadata(out)
    assert meta["training"]["teachers"] == (["synthetic", "clip"] if with_synthetic else ["clip"])
    scores = AttiqaLoss(checkpoint=out).scores(torch.rand(1, 3, 48, 48))
    assert all(0 <= float(v) <= 1 for v in scores.values())
    if hardened:  # every model this project trains gets the robustness report too
        report = tmp_path / "robustness"
        assert main(["robustness", "--checkpoint", str(out), "--images", str(photo_dir), "--crop", "48",
                     "--views", "0", "--eps", "4", "--steps", "1", "--generator-steps", "1",
                     "--anchor-sizes", "48", "--out", str(report)]) == 0
        assert "4/255 attacks, views 0" in (report / "robustness.md").read_text()


def test_hardening_adds_twins_to_their_groups_and_anchors_outside_the_ranking(photo_dir, tmp_path, monkeypatch):
    import pretrain.training.step as train_module

    seen = {}
    real_losses, real_spec, real_gain = train_module.pretrain_losses, train_module.specificity_loss, train_module.no_gain_loss

    def losses(logits, labels, groups, **kw):
        seen["ranked"], seen["groups"] = len(logits), groups.tolist()
        return real_losses(logits, labels, groups, **kw)

    def spec(scores, groups, target):
        seen["specific"] = len(scores)
        return real_spec(scores, groups, target)

    def gain(adv, start, attacked=None):
        seen["twins"], seen["attacked"] = len(adv), attacked
        return real_gain(adv, start, attacked)

    def edges(sharpness_logits, margin):
        seen["edges"] = len(sharpness_logits)
        return real_edges(sharpness_logits, margin)

    real_edges = train_module.edge_ranking_loss
    monkeypatch.setattr(train_module, "pretrain_losses", losses)
    monkeypatch.setattr(train_module, "specificity_loss", spec)
    monkeypatch.setattr(train_module, "no_gain_loss", gain)
    monkeypatch.setattr(train_module, "edge_ranking_loss", edges)
    out = train(_cfg(photo_dir, 2, **{"hardening.anchors": 3, "hardening.adversarial": 3,
                                      "hardening.edge_pairs": 2}), tmp_path / "run", progress=False)
    # batch 8 = 2 groups of 3 levels + 1 pair crop; 3 twins join the groups; anchors and
    # the 2 edge pairs (4 images) are not ranked.
    assert seen == {"ranked": 11, "specific": 11, "twins": 3, "edges": 4, "groups": seen["groups"], "attacked": None}
    assert set(seen["groups"]) == {0, 1}
    train(_cfg(photo_dir, 1, **{"hardening.adversarial": 3, "hardening.no_gain_attacked_only": True}),
          tmp_path / "attacked", progress=False)
    assert seen["twins"] == 3 and seen["attacked"].shape == (3,)  # each twin's attacked attribute
    recorded = read_checkpoint_metadata(out)["training"]["config"]["hardening"]
    assert recorded["anchors"] == 3 and recorded["adversarial"] == 3


def test_no_gain_clipped_fix_bounds_each_twin_by_its_honest_partial_fix(photo_dir, tmp_path, monkeypatch):
    """With ``no_gain_clipped_fix`` each twin's bound is the higher of its start's scores
    and those of its start moved towards the group's least degraded level within the
    twin's radius (scored in the same pass, outside the ranking). Without the synthetic
    teacher the option is refused by name."""
    import pretrain.training.step as train_module

    seen = {}
    real_losses, real_gain, real_fix = (train_module.pretrain_losses, train_module.no_gain_loss,
                                        train_module.clipped_fix)

    def losses(logits, labels, groups, **kw):
        seen["ranked"] = len(logits)
        return real_losses(logits, labels, groups, **kw)

    def gain(adv, bound, attacked=None):
        seen.setdefault("bounds", []).append(bound.detach().clone())
        return real_gain(adv, bound, attacked)

    def fix(degraded, better, eps):
        out = real_fix(degraded, better, eps)
        seen.setdefault("moved", []).append((out - degraded).abs().flatten(1).amax(1))
        seen.setdefault("eps", []).append(eps)
        return out

    monkeypatch.setattr(train_module, "pretrain_losses", losses)
    monkeypatch.setattr(train_module, "no_gain_loss", gain)
    monkeypatch.setattr(train_module, "clipped_fix", fix)
    train(_cfg(photo_dir, 2, **{"hardening.adversarial": 4, "hardening.no_gain_clipped_fix": True,
                                "hardening.edge_pairs": 1, "hardening.anchors": 2}),
          tmp_path / "run", progress=False)
    assert seen["ranked"] == 12  # 2 groups of 4 + 4 twins: the fixes are not ranked
    for moved, eps in zip(seen["moved"], seen["eps"]):
        assert (moved <= eps + 1e-6).all()  # inside each twin's ball
    assert len(seen["bounds"]) == 2 and all(b.shape == (4, 5) for b in seen["bounds"])
    with pytest.raises(ValueError, match="no_gain_clipped_fix needs the synthetic teacher"):
        train_module.PretrainStep(None, None, synthetic=None, n_sources=0, clip=object(), n_clip=4, loss=None,
                                  hard=train_module.HardeningConfig(adversarial=2, no_gain_clipped_fix=True),
                                  seed=0, rank=0, device=torch.device("cpu"), bf16=False)


def test_alignment_term_uses_levels_with_a_better_one_and_is_logged(photo_dir, tmp_path, monkeypatch):
    """``hardening.alignment``: the term is computed on graded levels that have a better
    level in their group (never a group's first level or the pair crop), logged as
    loss/alignment, and refused by name without the synthetic teacher."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import pretrain.training.step as train_module

    seen = []
    real = train_module.alignment_loss

    def spy(plain, h, x, targets, candidates, group_size, g, device):
        seen.append((list(candidates), group_size))
        return real(plain, h, x, targets, candidates, group_size, g, device)

    monkeypatch.setattr(train_module, "alignment_loss", spy)
    train(_cfg(photo_dir, 2, **{"hardening.alignment": 3}), tmp_path / "run", progress=False)
    assert len(seen) == 2
    for candidates, gs in seen:  # 2 groups of 3 levels + a pair crop: levels 1 and 2 of each
        assert gs == 4 and candidates == [1, 2, 5, 6]
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/alignment")] == [2]  # logged at the last step
    with pytest.raises(ValueError, match="hardening.alignment needs the synthetic teacher"):
        train_module.PretrainStep(None, None, synthetic=None, n_sources=0, clip=object(), n_clip=4, loss=None,
                                  hard=train_module.HardeningConfig(alignment=2),
                                  seed=0, rank=0, device=torch.device("cpu"), bf16=False)


def test_large_anchors_learn_in_their_own_pass_and_leave_batchnorm_statistics_alone(photo_dir, tmp_path,
                                                                                     monkeypatch):
    """Large anchors are drawn after everything else (the batch is unchanged), scored with
    BatchNorm on its running statistics (not updated, its training mode back right after),
    learnt (the weights move) and logged as loss/anchor_large."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import attiqa_train.loop as loop_module
    import pretrain.training.step as train_module

    states = {}
    real_save, real_sample = loop_module.save_state, train_module.sample_anchors

    def keep(path, *, step, **objects):
        real_save(path, step=step, **objects)
        states[(path.parent.name, step)] = {k: v.clone() for k, v in objects["model"].state_dict().items()}

    sizes = []
    monkeypatch.setattr(loop_module, "save_state", keep)
    monkeypatch.setattr(train_module, "sample_anchors",
                        lambda n, size, g, **kw: sizes.append((n, size, kw["full_labels"])) or real_sample(n, size, g, **kw))
    every = {"train.state_every": 1, "hardening.anchors": 2}
    train(_cfg(photo_dir, 1, **every), tmp_path / "plain", progress=False)
    train(_cfg(photo_dir, 2, **every, **{"hardening.large_anchors": 2, "hardening.large_anchor_size": 64,
                                         "hardening.full_labels": True}), tmp_path / "large", progress=False)
    assert sizes == [(2, 48, False)] + [(2, 48, True), (2, 64, True)] * 2
    plain, large, large2 = states[("plain", 1)], states[("large", 1)], states[("large", 2)]
    stats = [k for k in plain if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert stats and all(torch.equal(plain[k], large[k]) for k in stats)  # the same batch, nothing else counted
    assert all(int(large2[k]) == 2 for k in stats if k.endswith("num_batches_tracked"))  # train mode came back
    assert any(not torch.equal(plain[k], large[k]) for k in plain if k not in stats)  # the pass was learnt
    acc = EventAccumulator(str(tmp_path / "large" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/anchor_large")] == [2]
    assert "loss/anchor_large" not in EventAccumulator(str(tmp_path / "plain" / "tb")).Reload().Tags()["scalars"]
    recorded = read_checkpoint_metadata(tmp_path / "large" / "checkpoint.safetensors")["training"]["config"]["hardening"]
    assert (recorded["large_anchors"], recorded["large_anchor_size"], recorded["full_labels"]) == (2, 64, True)


def test_sensitivity_penalty_trains_after_every_other_draw(photo_dir, tmp_path, monkeypatch):
    """The input-gradient penalty is drawn after everything else (the batch is the same
    with it), runs with BatchNorm on its running statistics, is learnt and logged as
    loss/sensitivity (margin 0: any gain counts); with margin 1 (no first-order gain of a
    score can exceed it) it is exactly 0 and changes nothing."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import attiqa_train.loop as loop_module
    import pretrain.training.hardening_terms as terms_module
    import pretrain.training.step as train_module

    states, values = {}, []
    real_save, real_penalty, real_gain = loop_module.save_state, train_module.sensitivity_penalty, terms_module.first_order_gain

    def keep(path, *, step, **objects):
        real_save(path, step=step, **objects)
        states[(path.parent.name, step)] = {k: v.clone() for k, v in objects["model"].state_dict().items()}

    def penalty(plain, h, *args):
        values.append(real_penalty(plain, h, *args))
        assert all(m.training for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))  # restored
        return values[-1]

    def gain(net, *args):
        assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
        return real_gain(net, *args)

    monkeypatch.setattr(loop_module, "save_state", keep)
    monkeypatch.setattr(terms_module, "first_order_gain", gain)
    monkeypatch.setattr(train_module, "sensitivity_penalty", penalty)
    train(_cfg(photo_dir, 1, **{"train.state_every": 1}), tmp_path / "plain", progress=False)
    train(_cfg(photo_dir, 1, **{"train.state_every": 1, "hardening.sensitivity": 3,
                                "hardening.sensitivity_margin": 0.0}), tmp_path / "sens", progress=False)
    train(_cfg(photo_dir, 1, **{"train.state_every": 1, "hardening.sensitivity": 3,
                                "hardening.sensitivity_margin": 1.0}), tmp_path / "off", progress=False)
    plain, sens, off = states[("plain", 1)], states[("sens", 1)], states[("off", 1)]
    stats = [k for k in plain if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert all(torch.equal(plain[k], sens[k]) for k in stats)  # the same batch, nothing else counted
    assert float(values[0].detach()) > 0 and float(values[1].detach()) == 0
    assert any(not torch.equal(plain[k], sens[k]) for k in plain if k not in stats)  # the penalty was learnt
    assert all(torch.equal(plain[k], off[k]) for k in plain)  # a zero penalty changes nothing
    acc = EventAccumulator(str(tmp_path / "sens" / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss/sensitivity")] == [1]


def test_resume_of_a_run_saved_before_the_new_hardening_keys_existed(photo_dir, tmp_path):
    """A run folder whose config.yaml predates ``large_anchors``, ``large_anchor_size`` and
    ``full_labels`` resumes (missing keys are their defaults, which train as before); a
    non-default value for one of them is still refused, by name."""
    import yaml

    from attiqa_train.rundir import RunFolderError, changed_keys

    run = tmp_path / "run"
    train(_cfg(photo_dir, 2), run, progress=False)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for key in ("large_anchors", "large_anchor_size", "full_labels"):
        del saved["hardening"][key]
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(RunFolderError, match=r"hardening.large_anchors'\]"):
        train(_cfg(photo_dir, 2, **{"hardening.large_anchors": 1}), run, resume=True, progress=False)
    train(_cfg(photo_dir, 2), run, resume=True, progress=False)
    # Without defaults a missing key differs; a whole missing section counts as its defaults.
    assert changed_keys({"a": {}}, {"a": {"k": 0}}) == ["a.k"]
    assert changed_keys({}, {"a": {"k": 0}}, defaults={"a": {"k": 0}}) == []
    assert changed_keys({}, {"a": {"k": 1}}, defaults={"a": {"k": 0}}) == ["a.k"]


@pytest.mark.parametrize("key, value, message", [
    ("hardening.anchors", -1, "hardening.anchors must be >= 0, got -1"),
    ("hardening.adversarial", 9, r"hardening.adversarial must be <= train.batch_size \(8\), got 9"),
    ("hardening.adv_eps", 0, r"hardening.adv_eps must be in \(0, 255\] \(1/255 units\), got 0"),
    ("hardening.adv_steps", 0, "hardening.adv_steps must be >= 1, got 0"),
    ("hardening.adv_target_prob", 2, r"hardening.adv_target_prob must be in \[0, 1\], got 2"),
    ("hardening.edge_pairs", -2, "hardening.edge_pairs must be >= 0, got -2"),
    ("hardening.edge_invariance", -1, "hardening.edge_invariance must be >= 0, got -1"),
    ("hardening.edge_margin", -0.5, "hardening.edge_margin must be >= 0, got -0.5"),
    ("hardening.large_anchors", -1, "hardening.large_anchors must be >= 0, got -1"),
    ("hardening.large_anchor_size", 16, r"hardening.large_anchor_size must be >= 32 \(pixels\), got 16"),
    ("model.aa_layer", "max", "model.aa_layer must be null, 'avg' or 'blur', got 'max'"),
    ("hardening.sensitivity", 9, r"hardening.sensitivity must be <= train.batch_size \(8\), got 9"),
    ("hardening.sensitivity_eps", 300, r"hardening.sensitivity_eps must be in \(0, 255\] \(1/255 units\), got 300"),
    ("hardening.sensitivity_margin", -0.1, "hardening.sensitivity_margin must be >= 0, got -0.1"),
    ("hardening.alignment", 9, r"hardening.alignment must be <= train.batch_size \(8\), got 9"),
    ("hardening.alignment_eps", 0, r"hardening.alignment_eps must be in \(0, 255\] \(1/255 units\), got 0"),
    ("hardening.alignment_weight", -1, "hardening.alignment_weight must be >= 0, got -1"),
])
def test_hardening_rejects_bad_values(photo_dir, tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        train(_cfg(photo_dir, 1, **{key: value}), tmp_path / "run", progress=False)


def test_init_checkpoint_starts_from_an_exported_model_and_refuses_another_architecture(photo_dir, tmp_path):
    """``model.init_checkpoint``: the run's first state is the exported model's weights
    (a zero learning rate keeps them to the end), and another backbone is refused by name."""
    first = train(_cfg(photo_dir, 2), tmp_path / "first", progress=False)
    second = train(_cfg(photo_dir, 1, **{"model.init_checkpoint": str(first), "train.lr": 0.0,
                                         "train.warmup_steps": 0}), tmp_path / "second", progress=False)
    a, b = load_file(str(first)), load_file(str(second))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if "running" not in k and "num_batches" not in k)
    with pytest.raises(ValueError, match="model.init_checkpoint .* does not fit model.backbone"):
        train(_cfg(photo_dir, 1, **{"model.init_checkpoint": str(first), "model.backbone": "resnet10t"}),
              tmp_path / "third", progress=False)


def test_a_diverged_run_exits_1_naming_what_is_not_finite(tmp_path, photo_dir, monkeypatch, capsys):
    """NaN weights or NaN final validation SRCCs are no result: `attiqa-pretrain train`
    says so in one line and exits 1 (the files are kept); a finite run exits 0."""
    from attiqa_loss import save_checkpoint
    from pretrain.cli import main
    from pretrain.training import train as train_module

    torch.manual_seed(0)
    net = create_attiqa_net("test_resnet").eval()
    finite = save_checkpoint(net, tmp_path / "finite.safetensors", training={"val_srcc": {"sharpness": 0.9}})
    nan_srcc = save_checkpoint(net, tmp_path / "nan_srcc.safetensors", training={"val_srcc": {"sharpness": NAN}})
    with torch.no_grad():
        net.heads["contrast"].weight.fill_(NAN)
    nan_weights = save_checkpoint(net, tmp_path / "nan_weights.safetensors")
    assert train_module.diverged(finite) is None
    assert train_module.diverged(nan_srcc) == "the final validation SRCCs are not finite (sharpness=nan)"
    assert "the trained network is not usable" in train_module.diverged(nan_weights)
    assert "heads.contrast.weight" in train_module.diverged(nan_weights)
    for checkpoint, code in ((finite, 0), (nan_srcc, 1), (nan_weights, 1)):
        monkeypatch.setattr(train_module, "train", lambda *a, checkpoint=checkpoint, **k: checkpoint)
        assert main(["train", "--images", str(photo_dir), "--out", str(tmp_path / "run")]) == code
        err = capsys.readouterr().err
        assert ("is kept" not in err and "kept for inspection" not in err) if code == 0 else \
            err.strip().startswith("attiqa-pretrain train: the ") and "kept for inspection" in err
