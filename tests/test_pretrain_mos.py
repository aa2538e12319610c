"""MOS metrics, CSV datasets, the ridge probe, MOS model files, finetune and evaluate (tiny nets, CPU)."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from attiqa_loss import CheckpointError, load_checkpoint
from attiqa_loss.io import save_image
from pretrain.cli import main as pretrain_main
from pretrain.metrics.correlation import correlations, krcc, plcc, plcc_logistic, rankdata, srcc
from pretrain.mos.data import random_splits, read_mos_csv
from pretrain.mos.model import MosModel, fit_ridge, load_mos_model, save_mos_model

from helpers import build_tiny_net, make_texture


# ----------------------------------------------------------------------------- metrics


def test_rank_correlations_known_values():
    x = np.arange(20.0)
    assert srcc(x, x**3) == pytest.approx(1.0)
    assert krcc(x, np.exp(x / 5)) == pytest.approx(1.0)
    assert srcc(x, -x) == pytest.approx(-1.0)
    assert krcc(x, x[::-1]) == pytest.approx(-1.0)
    assert plcc(x, 2 * x + 1) == pytest.approx(1.0)
    assert np.isnan(srcc(np.ones(5), x[:5]))


def test_metrics_match_scipy_with_ties():
    from scipy.stats import kendalltau, pearsonr, spearmanr

    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=200), 1)
    b = np.round(a + rng.normal(size=200), 0)
    assert srcc(a, b) == pytest.approx(spearmanr(a, b)[0], abs=1e-12)
    assert krcc(a, b, chunk=17) == pytest.approx(kendalltau(a, b)[0], abs=1e-12)  # tau-b
    assert plcc(a, b) == pytest.approx(pearsonr(a, b)[0], abs=1e-12)
    assert list(rankdata([3, 1, 3, 2])) == [3.5, 1.0, 3.5, 2.0]


def test_logistic_plcc_beats_plain_on_a_nonlinear_monotone_relation():
    x = np.linspace(0, 1, 60)
    y = 1 + 4 / (1 + np.exp(-(x - 0.5) * 15))
    fitted, ok = plcc_logistic(x, y)
    assert ok
    assert fitted > plcc(x, y) + 0.01
    assert fitted == pytest.approx(1.0, abs=1e-3)
    # a decreasing relation keeps its sign
    down, ok = plcc_logistic(x, -y)
    assert ok and down == pytest.approx(-fitted, abs=1e-6)


def test_logistic_plcc_falls_back_to_plain_when_the_fit_is_impossible():
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.0])  # 3 points, 4 parameters
    value, ok = plcc_logistic(x, y)
    assert not ok and value == pytest.approx(plcc(x, y))
    m = correlations(x, y)
    assert m["logistic_fit"] == 0.0 and m["plcc"] == m["plcc_plain"]


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length, got 3 and 2"):
        srcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="must be finite"):
        plcc([1, np.nan, 3], [1, 2, 3])


# ----------------------------------------------------------------------------- data


def _write_csv(path: Path, rows, header=("path", "mos")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def brightness_csv(tmp_path):
    """24 textures darkened by a known factor; MOS = 1 + 4 * factor (brighter = better)."""
    rows = []
    for i in range(24):
        b = 0.15 + 0.85 * ((i * 7) % 24) / 23
        save_image(make_texture(40, 48, seed=i) * b, tmp_path / "imgs" / f"im{i:02d}.png")
        rows.append((f"imgs/im{i:02d}.png", f"{1 + 4 * b:.4f}"))
    return _write_csv(tmp_path / "mos.csv", rows)


def test_read_mos_csv_resolves_relative_paths(brightness_csv):
    data = read_mos_csv(brightness_csv)
    assert len(data) == 24
    assert data.paths[0] == brightness_csv.parent / "imgs" / "im00.png"
    assert data.mos.dtype == np.float64 and data.mos[0] == pytest.approx(1 + 4 * 0.15)


def test_read_mos_csv_errors(tmp_path):
    with pytest.raises(ValueError, match=r"needs a header with columns 'path' and 'mos', got \['file', 'score'\]"):
        read_mos_csv(_write_csv(tmp_path / "a.csv", [("x.png", "1")], header=("file", "score")))
    with pytest.raises(ValueError, match="line 3: mos must be a number, got 'good'"):
        read_mos_csv(_write_csv(tmp_path / "b.csv", [("x.png", "1"), ("y.png", "good")]), check_files=False)
    with pytest.raises(FileNotFoundError, match=r"2 listed image\(s\) not found"):
        read_mos_csv(_write_csv(tmp_path / "c.csv", [("x.png", "1"), ("y.png", "2")]))
    with pytest.raises(ValueError, match="every mos is 3.0"):
        read_mos_csv(_write_csv(tmp_path / "d.csv", [("x.png", "3"), ("y.png", "3")]), check_files=False)


def test_random_splits_protocol():
    splits = random_splits(50, 10, 0.2, seed=3)
    assert len(splits) == 10
    for train, test in splits:
        assert len(test) == 10 and len(train) == 40
        assert not set(train) & set(test) and set(train) | set(test) == set(range(50))
    again = random_splits(50, 10, 0.2, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    assert not np.array_equal(splits[0][1], splits[1][1])
    with pytest.raises(ValueError, match="each side needs at least 3"):
        random_splits(10, 2, 0.2)


# ----------------------------------------------------------------------------- heads


@pytest.mark.parametrize("n,c", [(80, 6), (12, 40)])  # primal and dual form
def test_fit_ridge_recovers_a_linear_relation(n, c):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g) * 3 + 5
    w = torch.randn(c, generator=g)
    y = 10 + x @ w
    fit = fit_ridge(x, y, alphas=[1e-6, 1e-2, 10.0])
    z = (x - fit["feature_mean"]) / fit["feature_std"]
    pred = fit["mos_mean"] + fit["mos_std"] * (z @ fit["weight"] + fit["bias"])
    assert srcc(pred.numpy(), y.numpy()) > 0.95
    if n > c:
        assert fit["alpha"] == 1e-6
        assert torch.allclose(pred, y, atol=1e-2)
    with pytest.raises(ValueError, match="positive numbers"):
        fit_ridge(x, y, alphas=[0.0])


def test_mos_model_round_trip_and_strict_loading(tmp_path, tiny_checkpoint):
    model = MosModel(build_tiny_net(1), "full", mos_mean=50.0, mos_std=10.0)
    with torch.no_grad():
        model.head.weight.normal_()
        model.head.bias.fill_(0.3)
    path = save_mos_model(model, tmp_path / "m.safetensors", training={"csv": "x.csv"})
    loaded = load_mos_model(path)
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), loaded(x), atol=1e-6)
    assert loaded.mode == "full" and loaded.training_info == {"csv": "x.csv"}
    with pytest.raises(CheckpointError, match="use --zero-shot --checkpoint"):
        load_mos_model(tiny_checkpoint)


# ----------------------------------------------------------------------------- commands


def test_finetune_probe_then_evaluate(brightness_csv, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "probe"
    rc = pretrain_main(["finetune", "--checkpoint", str(tiny_checkpoint), "--csv", str(brightness_csv),
                        "--out", str(out), "--set", "eval.splits=4", "--set", "data.max_side=64"])
    assert rc == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["0", "1", "2", "3"]
    assert all(r["n_test"] == "5" and r["n_train"] == "19" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["splits"] == 4 and summary["mode"] == "probe"
    for m in ("srcc", "plcc", "plcc_plain", "krcc"):
        assert summary["median"][m] == pytest.approx(statistics.median(float(r[m]) for r in rows), abs=1e-6)
    # MOS is a monotone function of brightness, which even random features encode
    assert summary["median"]["srcc"] > 0.7
    model = load_mos_model(out / "mos_model.safetensors")
    assert model.mode == "probe"

    capsys.readouterr()
    ev = tmp_path / "eval"
    assert pretrain_main(["evaluate", "--model", str(out / "mos_model.safetensors"), "--csv", str(brightness_csv),
                          "--out", str(ev), "--set", "eval.splits=4", "--set", "data.max_side=64"]) == 0
    assert "fitted on this very CSV" in capsys.readouterr().err
    with open(ev / "results.csv", newline="") as f:
        erows = list(csv.DictReader(f))
    assert [r["split"] for r in erows] == ["0", "1", "2", "3", "all"]
    esummary = json.loads((ev / "summary.json").read_text())
    assert esummary["all"]["srcc"] > 0.9  # fitted on every row: memorisation, flagged above
    with open(ev / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 24


def test_finetune_full_mode_runs_and_saves(brightness_csv, tiny_checkpoint, tmp_path):
    out = tmp_path / "full"
    rc = pretrain_main(["finetune", "--checkpoint", str(tiny_checkpoint), "--csv", str(brightness_csv),
                        "--out", str(out), "--set", "eval.splits=2", "--set", "finetune.mode=full",
                        "--set", "finetune.steps=6", "--set", "finetune.batch_size=4", "--set", "finetune.crop=32",
                        "--set", "finetune.workers=0", "--set", "data.max_side=64"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "full" and summary["splits"] == 2
    assert all(-1 <= summary["median"][m] <= 1 for m in ("srcc", "plcc", "krcc"))
    model = load_mos_model(out / "mos_model.safetensors")
    assert model.mode == "full"
    # the backbone was trained: it differs from the pretrained checkpoint
    base = load_checkpoint(tiny_checkpoint)
    changed = any(not torch.equal(a, b) for a, b in zip(base.backbone.state_dict().values(), model.net.backbone.state_dict().values()))
    assert changed


def test_evaluate_zero_shot_is_the_attribute_mean(brightness_csv, tiny_checkpoint, tmp_path):
    out = tmp_path / "zs"
    assert pretrain_main(["evaluate", "--zero-shot", "--checkpoint", str(tiny_checkpoint), "--csv", str(brightness_csv),
                          "--out", str(out), "--set", "eval.splits=0"]) == 0
    with open(out / "predictions.csv", newline="") as f:
        first = next(csv.DictReader(f))
    from attiqa_loss.io import read_image

    net = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        expected = float(net(read_image(first["path"], max_side=1024)[None]).mean())
    assert float(first["prediction"]) == pytest.approx(expected, abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["predictor"].startswith("zero-shot") and summary["splits"] == 0


def test_evaluate_argument_errors(brightness_csv, tiny_checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="give either --model MOS_MODEL, or --zero-shot"):
        pretrain_main(["evaluate", "--csv", str(brightness_csv), "--out", str(tmp_path / "e")])
    with pytest.raises(SystemExit, match="is not an attiqa-mos model"):
        pretrain_main(["evaluate", "--model", str(tiny_checkpoint), "--csv", str(brightness_csv), "--out", str(tmp_path / "e")])
    with pytest.raises(SystemExit, match=r"unknown config key 'finetune.modee' in --set"):
        pretrain_main(["finetune", "--checkpoint", str(tiny_checkpoint), "--csv", str(brightness_csv),
                       "--out", str(tmp_path / "f"), "--set", "finetune.modee=full"])


@pytest.mark.slow
def test_finetune_full_mode_under_torchrun(brightness_csv, tiny_checkpoint, tmp_path, free_port):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port), "-m", "pretrain.cli", "finetune", "--checkpoint", str(tiny_checkpoint),
           "--csv", str(brightness_csv), "--out", str(tmp_path / "ddp"), "--set", "finetune.mode=full",
           "--set", "eval.splits=1", "--set", "finetune.steps=3", "--set", "finetune.batch_size=2",
           "--set", "finetune.crop=32", "--set", "finetune.workers=0", "--set", "finetune.save_model=false",
           "--set", "device=cpu", "--set", "data.max_side=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["splits"] == 1 and summary["model"] is None
    assert not (tmp_path / "ddp" / "mos_model.safetensors").exists()
