"""`attiqa-enhance demo` (the README's main job) end to end, shortened to two steps."""

from __future__ import annotations

import pytest

from attiqa_loss import ATTRIBUTES


def test_demo_runs_offline_on_bundled_photos(tmp_path, tiny_checkpoint_path, capsys, monkeypatch):
    """An install without a shipped enhancer: three columns (the next test: with one)."""
    pytest.importorskip("skimage")
    from enhancement import weights
    from enhancement.demo import main

    monkeypatch.setattr(weights, "DEFAULT_ENHANCER_PATH", tmp_path / "absent.safetensors")

    out = tmp_path / "demo"
    code = main(["--out", str(out), "--steps", "2", "--checkpoint", str(tiny_checkpoint_path),
                 "--set", "train.progress=false"])
    assert code == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("attribute"))
    assert header.split() == ["attribute", "input", "output", "reference"]
    for name in ATTRIBUTES:
        row = next(line for line in printed.splitlines() if line.startswith(name))
        values = [float(v) for v in row.split()[1:]]
        assert len(values) == 3 and all(0.0 <= v <= 1.0 for v in values)
    assert "PSNR" in printed and "tensorboard --logdir" in printed
    assert "against the clean reference" in printed and "clean (reference)" in printed
    assert (out / "enhancer.safetensors").is_file()
    # Validated at step 0 and every sixth of the steps, so TensorBoard draws lines, not dots.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb" / "output"))
    acc.Reload()
    assert [e.step for e in acc.Tensors("attributes/brightness")] == [0, 1, 2]
    samples = sorted(p.name for p in (out / "samples").iterdir())
    assert len(samples) == 6 and {s.rsplit("_", 1)[1] for s in samples} == {"input.png", "output.png", "reference.png"}


def test_table_reads_metrics_of_older_runs():
    from enhancement.demo import format_table

    old = {f"attributes/{a}/{r}": 0.5 for a in ATTRIBUTES for r in ("input", "output", "target")}
    header, _, first = format_table(old).splitlines()[:3]
    assert header.split() == ["attribute", "input", "output", "reference"]
    assert first.split()[1:] == ["0.500"] * 3


def test_demo_rejects_bad_steps(tmp_path):
    from enhancement.demo import main

    with pytest.raises(SystemExit, match="--steps must be >= 1, got 0"):
        main(["--out", str(tmp_path), "--steps", "0"])


def test_demo_sets_the_shipped_enhancer_beside_its_short_run(tmp_path, tiny_checkpoint_path, capsys, monkeypatch):
    """With a shipped enhancer in the install, the table gains its column (scored by the
    same quality model), the PSNR line its figures, and comparison.png shows the four
    images of each held-out photo in one row."""
    pytest.importorskip("skimage")
    import torch

    import enhancement.weights as weights
    from attiqa_loss.io import read_image
    from enhancement.demo import main
    from enhancement.unet import UNet

    torch.manual_seed(0)
    shipped = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=2)
    with torch.no_grad():
        shipped.head.bias.fill_(1.0)  # a gain of e: brighter than its input
    monkeypatch.setattr(weights, "DEFAULT_ENHANCER_PATH", weights.save_enhancer(shipped, tmp_path / "shipped.safetensors"))
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--steps", "1", "--checkpoint", str(tiny_checkpoint_path),
                 "--set", "train.progress=false"]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("attribute"))
    assert header.split() == ["attribute", "input", "output", "shipped", "reference"]
    psnr = next(line for line in printed.splitlines() if line.startswith("PSNR"))
    assert "(shipped " in psnr and "input | output | shipped | reference" in printed
    names = sorted(p.name for p in (out / "samples").iterdir())
    assert len(names) == 8
    from enhancement.tensorboard_utils import header_height

    strip = read_image(out / "comparison.png")
    inputs = [read_image(p) for p in sorted((out / "samples").glob("*_input.png"))]
    bands = {header_height(round(im.shape[-1] * 256 / im.shape[-2])) for im in inputs}
    # two held-out photos, one row each, under the header band naming the four columns
    assert strip.shape[-2] - 2 * 256 in bands
    first = sorted((out / "samples").glob("*_input.png"))[0]
    stem = first.name[: -len("_input.png")]
    dark, bright = read_image(first), read_image(out / "samples" / f"{stem}_shipped.png")
    assert bright.mean() > dark.mean()
