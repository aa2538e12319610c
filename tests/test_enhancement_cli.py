"""``attiqa-enhance`` dispatch and help texts."""

import sys
import types

import pytest

from enhancement import cli



@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["infer", "--help"]])
def test_help_explains_and_says_scores_are_quality_aligned(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "quality-aligned" in out and "1 = well lit, 0 = dark" in out


def test_train_help_names_its_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for option in ("--config", "--set", "--out", "--data", "--resume"):
        assert option in out


def test_infer_requires_data_and_out(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["infer", "--data", "x"])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_demo_is_delegated_lazily_with_its_arguments(monkeypatch):
    seen = {}
    fake = types.ModuleType("enhancement.demo")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "enhancement.demo", fake)
    assert cli.main(["demo", "--out", "runs/demo", "--help"]) == 0
    assert seen["argv"] == ["--out", "runs/demo", "--help"]


def test_missing_demo_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "enhancement.demo", None)  # makes the import fail
    assert cli.main(["demo"]) == 2
    assert "no enhancement.demo module" in capsys.readouterr().err


def test_demo_is_listed_in_the_top_level_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "demo" in capsys.readouterr().out


def test_infer_reports_missing_checkpoint(tmp_path, capsys):
    args = ["infer", "--checkpoint", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert cli.main(args) == 2
    assert "no enhancer weights at" in capsys.readouterr().err


@pytest.mark.parametrize("flag, shown", [([], True), (["--no-progress"], False)])
def test_no_progress_turns_the_bar_off(flag, shown, tmp_path, monkeypatch):
    import enhancement.train as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda cfg, out, **kw: seen.setdefault("cfg", cfg) and {})
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), *flag]) == 0
    assert seen["cfg"].train.progress is shown and seen["cfg"].data.train_dir == str(tmp_path)
