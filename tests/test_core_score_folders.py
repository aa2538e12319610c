"""Comparing folders: ``attiqa-score A B`` (per-folder means, differences, pairing by name)
and the Python API ``score_folder`` / ``compare_folders``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

import attiqa_loss
from attiqa_loss import ATTRIBUTES, FolderScores, compare_folders, load_checkpoint, score_folder
from attiqa_loss.cli import main, run_names
from attiqa_loss.io import read_image

NAMES = list(ATTRIBUTES)


@pytest.fixture
def two_folders(tmp_path, write_png):
    """before/ and after/ hold the same three names (one nested) with different content;
    after/ has one more image without a counterpart."""
    a, b = tmp_path / "before", tmp_path / "after"
    for i, name in enumerate(("p1.png", "p2.png", "sub/p3.png")):
        write_png(a / name, 48, 40, seed=i)
        write_png(b / name, 48, 40, seed=10 + i)
    write_png(b / "only_after.png", 40, 48, seed=99)
    return a, b


def _scores(checkpoint, path):
    net = load_checkpoint(checkpoint)
    with torch.no_grad():
        return net(read_image(path)[None])[0].tolist()


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_csv_pairs_images_by_relative_path(two_folders, tiny_checkpoint_path, capsys):
    a, b = two_folders
    code, out, err = _run([a, b, "--checkpoint", tiny_checkpoint_path, "--format", "csv", "--no-progress"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["folder", "path", "name", *NAMES, *(f"{n}_diff" for n in NAMES)]
    by_key = {(r["folder"], r["name"]): r for r in rows}
    assert set(by_key) == {(str(a), "p1.png"), (str(a), "p2.png"), (str(a), "sub/p3.png"), (str(b), "p1.png"),
                           (str(b), "p2.png"), (str(b), "sub/p3.png"), (str(b), "only_after.png")}
    for name in ("p1.png", "p2.png", "sub/p3.png"):
        ref, other = by_key[(str(a), name)], by_key[(str(b), name)]
        assert other["path"] == str(b / name)
        expected = [x - y for x, y in zip(_scores(tiny_checkpoint_path, b / name), _scores(tiny_checkpoint_path, a / name))]
        assert [float(other[f"{n}_diff"]) for n in NAMES] == pytest.approx(expected, abs=2e-6)
        assert all(ref[f"{n}_diff"] == "" for n in NAMES)  # the first folder is the reference
    assert all(by_key[(str(b), "only_after.png")][f"{n}_diff"] == "" for n in NAMES)
    # the per-folder table goes to stderr, so stdout stays a clean CSV document
    assert f"difference to {a}" in err and "3 image(s) paired by relative path" in err


def test_table_gives_each_folder_its_means_and_the_difference(two_folders, tiny_checkpoint_path, capsys):
    a, b = two_folders
    code, out, _ = _run([a, b, "--checkpoint", tiny_checkpoint_path, "--no-progress"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert not any(line.split()[:1] == ["mean"] for line in lines)  # no pooled mean over both folders
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["folder", "images"])
    assert lines[start].split()[2:] == NAMES
    row_a, row_b = lines[start + 1].split(), lines[start + 2].split()
    assert row_a[:2] == [str(a), "3"] and row_b[:2] == [str(b), "4"]
    per_image = {p: _scores(tiny_checkpoint_path, p) for p in a.rglob("*.png")}
    per_image_b = {p: _scores(tiny_checkpoint_path, p) for p in b.rglob("*.png")}
    mean_a = [sum(col) / 3 for col in zip(*per_image.values())]
    mean_b = [sum(col) / 4 for col in zip(*per_image_b.values())]
    assert [float(v) for v in row_a[2:]] == pytest.approx(mean_a, abs=6e-4)
    assert [float(v) for v in row_b[2:]] == pytest.approx(mean_b, abs=6e-4)
    diff_line = lines[-1].split()
    assert diff_line[:2] == [str(b), "3"]  # paired images only: only_after.png is left out
    paired = [[x - y for x, y in zip(_scores(tiny_checkpoint_path, b / n), _scores(tiny_checkpoint_path, a / n))]
              for n in ("p1.png", "p2.png", "sub/p3.png")]
    assert [float(v) for v in diff_line[2:]] == pytest.approx([sum(c) / 3 for c in zip(*paired)], abs=6e-4)
    assert "1 image(s) without a counterpart" in out


def test_json_has_folder_name_and_null_differences(two_folders, tiny_checkpoint_path, capsys):
    a, b = two_folders
    code, out, _ = _run([a, b, "--checkpoint", tiny_checkpoint_path, "--format", "json", "--no-progress"], capsys)
    assert code == 0
    records = json.loads(out)
    assert len(records) == 7
    ref = [r for r in records if r["folder"] == str(a)]
    assert all(r[f"{n}_diff"] is None for r in ref for n in NAMES)
    (p3,) = [r for r in records if r["folder"] == str(b) and r["name"] == "sub/p3.png"]
    (p3_ref,) = [r for r in ref if r["name"] == "sub/p3.png"]
    assert p3["sharpness_diff"] == pytest.approx(p3["sharpness"] - p3_ref["sharpness"], abs=2e-6)


def test_folders_without_common_names_compare_means(tmp_path, write_png, tiny_checkpoint_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    write_png(a / "x.png", seed=1)
    write_png(b / "y.png", seed=2)
    write_png(b / "z.png", seed=3)
    code, out, _ = _run([a, b, "--checkpoint", tiny_checkpoint_path, "--no-progress"], capsys)
    assert code == 0
    assert "difference of the folder means" in out
    means_b = [sum(c) / 2 for c in zip(_scores(tiny_checkpoint_path, b / "y.png"), _scores(tiny_checkpoint_path, b / "z.png"))]
    expected = [x - y for x, y in zip(means_b, _scores(tiny_checkpoint_path, a / "x.png"))]
    diff_line = out.strip().splitlines()[-1].split()
    assert diff_line[:2] == [str(b), "-"]
    assert [float(v) for v in diff_line[2:]] == pytest.approx(expected, abs=6e-4)


def test_tensorboard_runs_are_distinct_when_folders_share_a_name(tmp_path, write_png, tiny_checkpoint_path, capsys):
    x, y = tmp_path / "x" / "out", tmp_path / "y" / "out"
    write_png(x / "a.png", seed=1)
    write_png(y / "a.png", seed=2)
    logdir = tmp_path / "tb"
    code, _, _ = _run([x, y, "--checkpoint", tiny_checkpoint_path, "--logdir", logdir, "--no-progress"], capsys)
    assert code == 0
    for run in ("x/out", "y/out"):
        assert any(f.name.startswith("events.out.tfevents") for f in (logdir / run).iterdir()), run
    assert not (logdir / "out_").exists()


def test_run_names():
    assert run_names([Path("/d/before"), Path("/d/after")]) == ["before", "after"]
    assert run_names([Path("/x/out"), Path("/y/out"), Path("/y/b")]) == ["x/out", "y/out", "b"]
    assert run_names([Path("/p/a/out"), Path("/q/a/out")]) == ["p/a/out", "q/a/out"]
    assert len(set(run_names([Path("/same"), Path("/same")]))) == 2


def test_single_folder_output_is_unchanged(two_folders, tiny_checkpoint_path, capsys):
    a, _ = two_folders
    code, out, _ = _run([a, "--checkpoint", tiny_checkpoint_path, "--format", "csv", "--no-progress"], capsys)
    assert code == 0
    assert out.splitlines()[0] == ",".join(["path", *NAMES])


def test_score_folder_api(two_folders, tiny_checkpoint_path, tmp_path):
    a, b = two_folders
    (a / "broken.png").write_bytes(b"not a png")
    result = score_folder(a, checkpoint=tiny_checkpoint_path, device="cpu")
    assert isinstance(result, FolderScores) and "score_folder" in attiqa_loss.__all__
    assert result.names == ["p1.png", "p2.png", "sub/p3.png"]
    assert result.scores.shape == (3, len(NAMES)) and result.scores.dtype == torch.float32
    assert result.scores[2].tolist() == pytest.approx(_scores(tiny_checkpoint_path, a / "sub" / "p3.png"), abs=2e-6)
    assert [p for p, _ in result.failures] == [str(a / "broken.png")]
    assert list(result.means()) == NAMES
    assert result.means()["contrast"] == pytest.approx(result.scores[:, 1].mean().item(), abs=1e-6)
    # the same network scores another folder; compare_folders pairs by relative path
    other = score_folder(b, net=result.net, device="cpu")
    comparison = compare_folders([result, other])
    assert comparison.paired_names == ["p1.png", "p2.png", "sub/p3.png"]
    assert comparison.unmatched(1) == ["only_after.png"]
    diff = comparison.differences(1)["p2.png"]["noisiness"]
    assert diff == pytest.approx(other.as_dict()["p2.png"]["noisiness"] - result.as_dict()["p2.png"]["noisiness"])
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        score_folder(tmp_path / "missing", checkpoint=tiny_checkpoint_path)
    with pytest.raises(ValueError, match="max_side must be >= 32"):
        score_folder(a, checkpoint=tiny_checkpoint_path, max_side=8)


def test_score_folder_is_documented():
    doc = score_folder.__doc__
    for words in ("Args:", "Returns:", "(N, 5)", "Raises:"):
        assert words in doc
