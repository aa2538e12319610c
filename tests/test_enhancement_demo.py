"""`attiqa-enhance demo` (the README's main job) end to end, shortened to two steps."""

from __future__ import annotations

import pytest

from attiqa_loss import ATTRIBUTES


def test_demo_runs_offline_on_bundled_photos(tmp_path, tiny_checkpoint_path, capsys):
    pytest.importorskip("skimage")
    from enhancement.demo import main

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
