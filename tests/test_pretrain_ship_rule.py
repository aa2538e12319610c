"""The ship rule (`attiqa-pretrain verdict`, pretrain/diagnostics/ship_rule.py) and the generator's photo
checks."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from attiqa_loss import ATTRIBUTES
from attiqa_train.files import sha256_file
from pretrain.diagnostics import ship_rule as S
from pretrain.diagnostics.robustness_generator import hue_concentration, structure_correlation

from helpers import make_texture


def _attack_rows(views=0, vs_fix=0.3, clipped=0.25):
    return [{"section": "attack", "attribute": a, "views": str(views), "eps_255": "4.0",
             "gain_vs_fix": str(vs_fix), "clip_fix_vs_fix": str(clipped)} for a in ATTRIBUTES]


def _anchor_rows(sizes=(128, 256), failed=()):
    return [{"section": "anchor", "anchor": "flat", "attribute": a, "size": str(s),
             "passed": str((a, s) not in failed)} for s in sizes for a in ("sharpness", "contrast")]


def _generator_rows(views=0, **over):
    base = {"section": "generator", "views": str(views), "right_way": "1.0", "psnr_db": "19.0", "psnr_in_db": "20.0",
            "rms_ratio": "0.95", "cast_excess": "0.01", "flat": "False", "embossed": "False", "single_hue": "False",
            "structure_corr": "0.95", "structure_drop": "0.0", "detail_ratio": "1.2", "hue_conc": "0.4"}
    rows = []
    for mode in ("loss", "loss@median", "l1+loss", "l1"):
        r = dict(base, mode=mode)
        r.update(over.get(mode, {}))
        rows.append(r)
    rows[-2]["psnr_db"], rows[-1]["psnr_db"] = "24.9", "25.0"
    return rows


def _passing_robustness():
    return _attack_rows() + _anchor_rows() + _generator_rows(0) + _generator_rows(2)


def _validity_rows(trained=0.97, unseen=0.9, off=0.2, own=0.5, jpeg=0.6):
    return [
        {"section": "family", "scorer": "attiqa", "case": "sharpness/gaussian", "srcc": str(trained),
         "on_shift": str(own), "max_off_abs_shift": str(off)},
        {"section": "family", "scorer": "attiqa", "case": "sharpness/defocus (unseen)", "srcc": str(unseen),
         "on_shift": "0.4", "max_off_abs_shift": "0.1"},
        {"section": "family", "scorer": "handcrafted", "case": "sharpness/gaussian", "srcc": "0.1",
         "on_shift": "0.0", "max_off_abs_shift": "0.9"},
        {"section": "jpeg", "scorer": "attiqa", "case": "JPEG", "srcc": str(jpeg), "on_shift": "0.1"},
    ]


def _by_key(verdicts):
    return {v.key: v for v in verdicts}


def test_a_model_within_every_limit_passes():
    verdicts = S.robustness_verdicts(_passing_robustness(), views=0) + S.validity_verdicts(_validity_rows())
    verdicts.append(S.throughput_verdict([{"kind": "attiqa", "arch": "resnet10t", "images_per_s": "100"},
                                          {"kind": "attiqa-tone", "arch": "resnet10t", "images_per_s": "90"}], 0, True))
    assert all(v.passed for v in verdicts), [v.line() for v in verdicts if not v.passed]
    assert S.final(verdicts)
    assert {v.key for v in verdicts} >= {"attack_vs_clipped_fix", "attack_vs_fix", "anchors", "generator_median_v0",
                                         "generator_median_v2", "stress_v0", "stress_v2", "l1_loss_psnr_delta",
                                         "validity_trained", "validity_unseen", "off_target", "jpeg_srcc", "throughput"}


@pytest.mark.parametrize("vs_fix, clipped, key", [
    (0.4, 0.25, "attack_vs_clipped_fix"),  # 1.6x the clipped fix
    (0.55, 0.5, "attack_vs_fix"),           # 1.1x the clipped fix but 55% of the fix
    (0.1, 0.0, "attack_vs_clipped_fix"),   # a clipped fix that earns nothing bounds nothing
])
def test_attack_rules_fail_past_their_limit(vs_fix, clipped, key):
    v = _by_key(S.attack_verdicts(_attack_rows(vs_fix=vs_fix, clipped=clipped), views=0))
    assert v[key].passed is False
    assert v[key].line().startswith("FAIL")


def test_attack_rule_reads_the_default_views_only():
    rows = _attack_rows(views=0, vs_fix=0.9) + _attack_rows(views=2, vs_fix=0.3)
    assert not _by_key(S.attack_verdicts(rows, views=0))["attack_vs_fix"].passed
    assert _by_key(S.attack_verdicts(rows, views=2))["attack_vs_fix"].passed
    missing = _by_key(S.attack_verdicts(rows, views=1))["attack_vs_fix"]
    assert missing.passed is None and "robustness --views 1" in missing.value


def test_anchor_rule_needs_both_sizes_and_names_the_failure():
    assert S.anchor_verdict(_anchor_rows()).value == "2/2 rules"
    assert S.anchor_verdict(_anchor_rows(sizes=(128,))).passed is None
    v = S.anchor_verdict(_anchor_rows(failed={("contrast", 256)}))
    assert v.passed is False and v.figure == 1 and "flat/contrast at 256 px" in v.value


@pytest.mark.parametrize("change", [
    {"right_way": "0.8"},        # one crop in five moved the wrong way
    {"psnr_db": "16.9"},         # more than 3 dB below the input's 20.0
    {"rms_ratio": "0.7"},        # contrast lost
    {"cast_excess": "0.08"},     # a painted cast
])
def test_median_target_generator_fails_on_each_check(change):
    v = _by_key(S.generator_verdicts(_generator_rows(0, **{"loss@median": change}), 0))
    assert v["generator_median_v0"].passed is False
    assert v["stress_v0"].passed


@pytest.mark.parametrize("flag", ["flat", "embossed", "single_hue"])
def test_stress_generator_fails_on_a_degenerate_output(flag):
    v = _by_key(S.generator_verdicts(_generator_rows(2, loss={flag: "True"}), 2))["stress_v2"]
    assert v.passed is False and flag in v.value


def test_fidelity_rule_compares_with_l1_alone():
    rows = _generator_rows(0)
    assert S.fidelity_verdict(rows, 0).figure == pytest.approx(-0.1)
    rows[2]["psnr_db"] = "24.7"
    assert S.fidelity_verdict(rows, 0).passed is False


@pytest.mark.parametrize("change, key", [
    ({"trained": 0.94}, "validity_trained"),
    ({"unseen": 0.84}, "validity_unseen"),
    ({"off": 0.41, "own": 0.6}, "off_target"),
    ({"off": 0.3, "own": 0.25}, "off_target"),  # moves another score more than its own
    ({"jpeg": -0.1}, "jpeg_srcc"),
])
def test_validity_rules_fail_past_their_limit(change, key):
    v = _by_key(S.validity_verdicts(_validity_rows(**change)))
    assert v[key].passed is False
    assert sum(x.passed is False for x in v.values()) == 1


def test_throughput_rule_against_the_untoned_network_or_clip():
    row = lambda kind, arch, speed, size=256: {"kind": kind, "arch": arch, "precision": "fp32", "size": str(size),  # noqa: E731
                                               "images_per_s": str(speed)}
    rows = [row("attiqa", "resnet10t", 100), row("attiqa-tone", "resnet10t", 70), row("clipiqa", "RN50", 20),
            row("attiqa", "resnet50", 10), row("attiqa", "resnet10t", 25, size=512)]  # other arch and size: ignored
    assert S.throughput_verdict(rows, 0, tone=True).passed is False   # 0.7x
    assert S.throughput_verdict(rows, 0, tone=False).figure == 1.0
    v = S.throughput_verdict(rows, 2, tone=True)                   # 70 / 2 views = 35 img/s against 20
    assert v.figure == pytest.approx(1.75) and v.passed is False
    assert S.throughput_verdict(None, 0, tone=True).passed is None


def test_missing_reports_fail_the_verdict():
    verdicts = S.robustness_verdicts([], views=0) + S.validity_verdicts([])
    assert all(v.passed is None for v in verdicts)
    assert not S.final(verdicts)
    assert all(v.line().startswith("MISSING") for v in verdicts)


def test_recipe_leaves_out_where_a_run_ran():
    config = {"model": {"backbone": "resnet10t"}, "synthetic": {"images": ["/a"], "crop": 128},
              "train": {"threads": 2, "device": "cpu", "steps": 10}, "loss": {}, "clip": {"enabled": False}}
    assert S.recipe_of(config) == {"model": {"backbone": "resnet10t"}, "synthetic": {"crop": 128},
                                   "train": {"steps": 10}, "loss": {}, "hardening": {}}


def test_hue_concentration_tells_a_single_hue_from_varied_colour():
    x = make_texture(32, 32, seed=0)[None]
    cyan = torch.stack([0.1 * x[:, 0], 0.5 + 0.4 * x[:, 1], 0.5 + 0.4 * x[:, 1]], dim=1)
    halves = torch.zeros(1, 3, 32, 32)
    halves[:, 0, :, :16] = 1.0  # red | cyan: opposite hues cancel
    halves[:, 1:, :, 16:] = 1.0
    (conc_cyan, chroma_cyan), (conc_halves, _) = hue_concentration(cyan), hue_concentration(halves)
    assert float(conc_cyan) > 0.95 and float(chroma_cyan) > 0.3
    assert float(conc_halves) < 0.05
    grey = hue_concentration(torch.full((1, 3, 8, 8), 0.5))
    assert float(grey[0]) == 0.0 and float(grey[1]) == 0.0
    tint = hue_concentration(x.mean(1, keepdim=True).expand(-1, 3, -1, -1) + torch.tensor([0.02, 0, -0.02]).view(1, 3, 1, 1))
    assert float(tint[0]) > 0.9 and float(tint[1]) < 0.1  # a slight tint: one hue, little chroma


def test_structure_correlation_keeps_a_brightened_photo_and_loses_a_relief():
    x = torch.stack([make_texture(64, 64, seed=i) for i in range(2)])
    assert torch.all(structure_correlation(0.3 + 0.6 * x, x) > 0.95)
    relief = (0.5 + 4 * (x - x.roll(2, dims=-1))).clamp(0, 1)  # an emboss filter
    assert torch.all(structure_correlation(relief, x) < 0.6)
    # A crop with almost no coarse structure: last-bit changes do not swing the figure.
    sky = 0.6 + 0.002 * x
    assert torch.all(structure_correlation(sky + 0.001 * torch.randn_like(sky), sky).abs() < 0.05)


def test_verdict_cli_on_a_tiny_model_fails_and_records_the_trial(tiny_checkpoint_path, write_png, tmp_path, capsys):
    from pretrain.cli import main

    for i in range(5):
        write_png(tmp_path / "photos" / f"p{i}.png", 72, 80, seed=i)
    common = ["--checkpoint", str(tiny_checkpoint_path), "--images", str(tmp_path / "photos"), "--all-images"]
    assert main(["robustness", *common, "--crop", "48", "--views", "0", "2", "--eps", "4", "--steps", "2",
                 "--generator-steps", "2", "--anchor-sizes", "48", "--out", str(tmp_path / "rob")]) == 0
    assert main(["validity", *common, "--levels", "3", "--max-side", "64", "--out", str(tmp_path / "val")]) == 0
    capsys.readouterr()
    trials = tmp_path / "trials.csv"
    verdict = ["verdict", "--robustness", str(tmp_path / "rob"), "--validity", str(tmp_path / "val"),
               "--checkpoint", str(tiny_checkpoint_path), "--views", "0", "--record", str(trials)]
    with pytest.raises(SystemExit, match="--record needs --trial NAME"):
        main(verdict)
    assert main(verdict + ["--trial", "tiny", "--note", "random weights"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("FAIL: ") and out[-1].endswith(" rules met")
    assert any(line.startswith("MISSING physical anchors") for line in out)  # anchors only at 48 px
    assert any(line.startswith("MISSING loss throughput") for line in out)
    (row,) = list(csv.DictReader(open(trials)))
    assert row["trial"] == "tiny" and row["verdict"] == "FAIL" and row["shipped"] == "no"
    assert json.loads(row["recipe"]) == {s: {} for s in S.RECIPE_SECTIONS}  # saved without a training config
    assert row["weights_sha256"] == sha256_file(tiny_checkpoint_path)
    assert row["stress_v2_pass"] in ("yes", "no") and not math.isnan(float(row["jpeg_srcc"]))
    assert main(verdict + ["--trial", "tiny2"]) == 1
    assert [r["trial"] for r in csv.DictReader(open(trials))] == ["tiny", "tiny2"]


def test_a_generator_that_leaves_its_inputs_alone_is_no_degenerate_optimum():
    """The untrained generator is the identity: its outputs are the degraded crops, which
    are photos (noisy, dark, grey-ish, blurred), so none may read as flat, embossed or
    single-hue, and the degraded attribute did not move."""
    from helpers import build_tiny_net
    from pretrain.diagnostics.robustness_generator import generator_probe

    x = torch.stack([make_texture(64, 64, seed=i, smoothness=4) for i in range(5)])
    rows, _ = generator_probe(build_tiny_net(0), x, steps=0, modes=("l1",))
    row = rows[0]
    assert not (row["flat"] or row["embossed"] or row["single_hue"]), row
    assert row["rms_ratio"] == pytest.approx(1.0) and row["right_way"] == 0.0
    assert row["psnr_db"] == pytest.approx(row["psnr_in_db"])
    assert row["detail_ratio"] <= 1.0 + 1e-6 and row["cast_excess"] <= 1e-6 and row["structure_drop"] == 0.0
