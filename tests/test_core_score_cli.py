"""``attiqa-score``: scoring files and folders from the command line (in-process and as a console script)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attiqa_loss import ATTRIBUTES, default_checkpoint_path, load_checkpoint
from attiqa_loss.cli import main, score_files
from attiqa_loss.io import read_image

COLUMNS = ["path", *ATTRIBUTES]


@pytest.fixture
def mixed_folder(tmp_path, write_png) -> Path:
    """Three good images of different sizes (one in a nested folder), one corrupt, one too small."""
    root = tmp_path / "photos"
    write_png(root / "a.png", 48, 40, seed=1)
    write_png(root / "b.png", 64, 50, seed=2)
    write_png(root / "nested" / "deeper" / "c.png", 32, 47, seed=3)
    write_png(root / "d.png", 48, 40, seed=4)  # same size as a.png: shares its batch
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    write_png(root / "tiny.png", 20, 20, seed=5)
    (root / "notes.txt").write_text("not an image, and not listed")
    return root


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _expected_scores(checkpoint: Path, files):
    net = load_checkpoint(checkpoint)
    with torch.no_grad():
        return {str(f): net(read_image(f)[None])[0].tolist() for f in files}


def test_folder_with_corrupt_file_csv(mixed_folder, tiny_checkpoint_path, capsys):
    code, out, err = _run([mixed_folder, "--checkpoint", tiny_checkpoint_path, "--format", "csv", "--no-progress"], capsys)
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == COLUMNS
    good = [mixed_folder / "a.png", mixed_folder / "b.png", mixed_folder / "d.png",
            mixed_folder / "nested" / "deeper" / "c.png"]
    assert sorted(r["path"] for r in rows) == sorted(map(str, good))
    expected = _expected_scores(tiny_checkpoint_path, good)
    for row in rows:  # each row belongs to its own file, whatever batch it was scored in
        got = [float(row[name]) for name in ATTRIBUTES]
        assert all(0.0 <= v <= 1.0 for v in got)
        assert got == pytest.approx(expected[row["path"]], abs=2e-6)
    assert "2 of 6 file(s) could not be scored" in err
    assert f"{mixed_folder / 'broken.png'}: " in err
    assert f"{mixed_folder / 'tiny.png'}: image is 20x20, smaller than 32x32" in err
    assert "notes.txt" not in out + err


def test_json_output(mixed_folder, tiny_checkpoint_path, capsys):
    code, out, err = _run([mixed_folder, "--checkpoint", tiny_checkpoint_path, "--format", "json", "--no-progress"], capsys)
    assert code == 1
    rows = json.loads(out)
    assert len(rows) == 4
    for row in rows:
        assert list(row) == COLUMNS
        assert all(isinstance(row[n], float) and 0 <= row[n] <= 1 for n in ATTRIBUTES)
    assert "broken.png" in err


def test_table_output_has_a_mean_row(mixed_folder, tiny_checkpoint_path, capsys):
    code, out, _ = _run([mixed_folder, "--checkpoint", tiny_checkpoint_path, "--no-progress"], capsys)
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].split() == COLUMNS
    assert len(lines) == 1 + 4 + 1 and lines[-1].split()[0] == "mean"
    values = [[float(v) for v in line.split()[1:]] for line in lines[1:-1]]
    means = [float(v) for v in lines[-1].split()[1:]]
    assert means == pytest.approx([sum(col) / len(col) for col in zip(*values)], abs=2e-3)


def test_all_good_folder_exits_zero(image_folder, tiny_checkpoint_path, capsys):
    folder = image_folder([(48, 40), (33, 90), (48, 40)])
    code, out, err = _run([folder, "--checkpoint", tiny_checkpoint_path, "--format", "csv", "--no-progress"], capsys)
    assert code == 0
    assert len(list(csv.DictReader(io.StringIO(out)))) == 3
    assert "could not be scored" not in err


def test_files_and_folders_are_deduplicated(image_folder, tiny_checkpoint_path, capsys):
    folder = image_folder([(48, 40), (40, 48)])
    one = folder / "img_000.png"
    code, out, _ = _run([one, folder, one, "--checkpoint", tiny_checkpoint_path, "--format", "json", "--no-progress"], capsys)
    assert code == 0
    assert [r["path"] for r in json.loads(out)] == [str(one), str(folder / "img_001.png")]


def test_batch_size_does_not_change_scores(mixed_folder, tiny_checkpoint_path, capsys):
    outs = []
    for bs in ("1", "16"):
        _, out, _ = _run([mixed_folder, "--checkpoint", tiny_checkpoint_path, "--format", "json",
                          "--no-progress", "--batch-size", bs], capsys)
        outs.append({r["path"]: [r[n] for n in ATTRIBUTES] for r in json.loads(out)})
    assert outs[0].keys() == outs[1].keys()
    for path in outs[0]:
        assert outs[0][path] == pytest.approx(outs[1][path], abs=2e-6)


def test_missing_path_exits_two(tmp_path, tiny_checkpoint_path, capsys):
    code, out, err = _run([tmp_path / "nowhere", "--checkpoint", tiny_checkpoint_path], capsys)
    assert code == 2 and out == ""
    assert f"no such file or folder: {tmp_path / 'nowhere'}" in err


def test_folder_without_images_exits_two(tmp_path, tiny_checkpoint_path, capsys):
    (tmp_path / "readme.txt").write_text("x")
    code, _, err = _run([tmp_path, "--checkpoint", tiny_checkpoint_path], capsys)
    assert code == 2 and f"no image files found in {tmp_path}" in err


def test_missing_checkpoint_exits_two(image_folder, tmp_path, capsys):
    code, out, err = _run([image_folder(), "--checkpoint", tmp_path / "gone.safetensors"], capsys)
    assert code == 2 and out == ""
    assert "cannot load the model: checkpoint not found:" in err and "gone.safetensors" in err


def test_bad_checkpoint_exits_two(image_folder, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    code, _, err = _run([image_folder(), "--checkpoint", bad], capsys)
    assert code == 2 and "bad.safetensors is not a readable safetensors file" in err


def test_no_default_model_exits_two(image_folder, capsys):
    if default_checkpoint_path().is_file():
        pytest.skip("this install embeds a default model")
    code, _, err = _run([image_folder()], capsys)
    assert code == 2
    assert "cannot load the model: this install has no embedded default model" in err
    assert "Traceback" not in err


def test_nothing_scored_still_gives_parseable_output(tmp_path, tiny_checkpoint_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    code, out, err = _run([tmp_path, "--checkpoint", tiny_checkpoint_path, "--format", "json", "--no-progress"], capsys)
    assert code == 1 and json.loads(out) == [] and "1 of 1 file(s)" in err
    code, out, _ = _run([tmp_path, "--checkpoint", tiny_checkpoint_path, "--format", "csv", "--no-progress"], capsys)
    assert code == 1 and out.strip() == ",".join(COLUMNS)


def test_bad_batch_size(image_folder, tiny_checkpoint_path, capsys):
    """A bad option value: one line on stderr and exit status 2 (usage), not 1 (files failed)."""
    with pytest.raises(SystemExit, match="--batch-size must be >= 1, got 0") as info:
        main([str(image_folder()), "--checkpoint", str(tiny_checkpoint_path), "--batch-size", "0"])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "attiqa-score: --batch-size must be >= 1, got 0"


def test_help_explains_the_scores(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "quality-aligned" in out
    for name in ATTRIBUTES:
        assert f"{name:<13} {ATTRIBUTES.descriptions[name]}" in out
    assert "Exit status 1" in out


def test_max_side_downscales_before_scoring(tmp_path, write_png, tiny_checkpoint_path, capsys):
    path = write_png(tmp_path / "big.png", 128, 96, seed=7)
    net = load_checkpoint(tiny_checkpoint_path)
    with torch.no_grad():
        expected = net(read_image(path, max_side=64)[None])[0].tolist()
    code, out, _ = _run([path, "--checkpoint", tiny_checkpoint_path, "--format", "json", "--no-progress", "--max-side", "64"], capsys)
    assert code == 0
    assert [json.loads(out)[0][n] for n in ATTRIBUTES] == pytest.approx(expected, abs=2e-6)


def test_logdir_writes_one_run_per_path(image_folder, tmp_path, tiny_checkpoint_path, capsys):
    a = image_folder([(48, 40)], name="before")
    b = image_folder([(48, 40), (40, 48)], name="after")
    logdir = tmp_path / "tb"
    code, _, err = _run([a, b, "--checkpoint", tiny_checkpoint_path, "--logdir", logdir, "--no-progress"], capsys)
    assert code == 0 and f"TensorBoard logs in {logdir}" in err
    for run in ("before", "after"):
        assert any(f.name.startswith("events.out.tfevents") for f in (logdir / run).iterdir()), run


def test_score_files_api(mixed_folder, tiny_checkpoint_path):
    net = load_checkpoint(tiny_checkpoint_path)
    files = [mixed_folder / "b.png", mixed_folder / "broken.png", mixed_folder / "a.png"]
    scores, failures = score_files(net, files, batch_size=4, progress=False)
    assert [p for p, _ in scores] == [str(files[0]), str(files[2])]  # input order kept
    assert [p for p, _ in failures] == [str(files[1])]
    assert all(len(s) == 5 for _, s in scores)


def _console_script() -> str:
    script = Path(sys.executable).parent / "attiqa-score"
    if script.is_file():
        return str(script)
    found = shutil.which("attiqa-score")
    if found is None:
        pytest.skip("the attiqa-score console script is not installed (pip install -e .)")
    return found


def test_console_script(mixed_folder, tiny_checkpoint_path):
    proc = subprocess.run(
        [_console_script(), str(mixed_folder), "--checkpoint", str(tiny_checkpoint_path), "--format", "json"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("ATTIQA_TEST_THREADS", "1")},
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)  # the progress bar goes to stderr, never into the data
    assert len(rows) == 4 and all(list(r) == COLUMNS for r in rows)
    assert "broken.png" in proc.stderr and "2 of 6 file(s) could not be scored" in proc.stderr


def test_real_photos(shared_data, tiny_checkpoint_path, capsys):
    folder = shared_data / "pristine" / "set14"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    n = len(list(folder.glob("*.png")))
    code, out, err = _run([folder, "--checkpoint", tiny_checkpoint_path, "--format", "csv", "--no-progress",
                           "--max-side", "96"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == n > 0
    assert all(0 <= float(r[name]) <= 1 for r in rows for name in ATTRIBUTES)
