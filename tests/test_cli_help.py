"""Every command's ``--help``: plain text (no reStructuredText markup) and light (answered
before torch, timm or kornia is imported)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from attiqa_loss.helptext import plain_text

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "kornia", "open_clip")
PRETRAIN_SUBCOMMANDS = ("select-prompts", "label", "train", "finetune", "evaluate", "validity", "robustness",
                        "verdict")

COMMANDS = [
    ("attiqa_loss.cli", ["--help"]),
    ("pretrain.cli", ["--help"]),
    *[("pretrain.cli", [name, "--help"]) for name in PRETRAIN_SUBCOMMANDS],
    ("pretrain.cli", ["train", "--out", "x", "-h"]),
    ("enhancement.cli", ["--help"]),
    ("enhancement.cli", ["train", "--help"]),
    ("enhancement.cli", ["infer", "--help"]),
    ("enhancement.cli", ["demo", "--help"]),
]

# Runs the command as its console script would, then reports which heavy modules got imported.
_DRIVER = """
import runpy, sys
module, argv = sys.argv[1], sys.argv[2:]
sys.argv = [module] + argv
status = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    status = exc.code or 0
sys.stdout.flush()
heavy = [m for m in {heavy!r} if m in sys.modules]
sys.stderr.write("EXIT=%s HEAVY=%s\\n" % (status, ",".join(heavy)))
""".format(heavy=HEAVY)

RST = re.compile(r"``|:(mod|func|class|meth|data|attr|ref):`")


def _help(module: str, argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", _DRIVER, module, *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module,argv", COMMANDS, ids=[" ".join([m.split(".")[0], *a]) for m, a in COMMANDS])
def test_help_is_plain_text_and_imports_no_torch(module, argv):
    proc = _help(module, argv)
    assert "EXIT=0 HEAVY=\n" in proc.stderr, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: ")
    assert not RST.search(proc.stdout), RST.search(proc.stdout).group(0)


def test_stored_pretrain_help_is_current():
    """``attiqa-pretrain SUBCOMMAND --help`` prints texts rendered in advance (pretrain/help_texts.py);
    they must match what the modules declare now. After changing an option or a description:
    ``make help-texts``."""
    from pretrain.cli import SUBCOMMANDS, render_help
    from pretrain.help_texts import HELP

    assert set(HELP) == set(SUBCOMMANDS), "run `make help-texts`"
    for name in SUBCOMMANDS:
        assert HELP[name] == render_help(name), f"pretrain/help_texts.py is stale for {name!r}: run `make help-texts`"


def test_pretrain_help_without_stored_texts_still_works(monkeypatch, capsys):
    import pretrain.cli as cli

    monkeypatch.setattr(cli, "_stored_help", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--help"])
    assert exc.value.code == 0
    assert "--zero-shot" in capsys.readouterr().out


def test_plain_text():
    assert (plain_text("writes ``state.pt`` (see :mod:`pretrain.clip.label_store`)")
            == "writes state.pt (see pretrain.clip.label_store)")
    assert plain_text(":func:`~attiqa_loss.loss.load_attiqa` and :class:`AttiqaLoss`") == "load_attiqa and AttiqaLoss"
    assert plain_text("keep `single` quotes and %(default)s") == "keep `single` quotes and %(default)s"


def test_argument_errors_also_come_before_torch():
    proc = _help("attiqa_loss.cli", ["--format", "xml", "somewhere"])
    assert "invalid choice: 'xml'" in proc.stderr and "EXIT=2 HEAVY=\n" in proc.stderr


#: --help texts that still name a docs/ file without saying where it is (modules other work owns)
DOCS_NOT_PLACED = ("robustness", "verdict")


def _docs_unplaced(text: str):
    """The ``docs/...md`` mentions of ``text`` not followed, in their sentence, by "in the source repository"."""
    flat = " ".join(text.split())
    return [m.group(0) for m in re.finditer(r"docs/[\w.]+\.md", flat)
            if "in the source repository" not in flat[m.end():].split(").")[0].split(". ")[0]]


def test_help_that_points_at_docs_says_they_are_in_the_source_repository(capsys):
    # An installed copy has no docs/ folder (#37): the help says where the file is.
    from enhancement.cli import main as enhance_main
    from pretrain.help_texts import HELP

    for argv in (["train", "--help"], ["infer", "--help"]):
        with pytest.raises(SystemExit):
            enhance_main(argv)
        text = capsys.readouterr().out
        assert "docs/" in text and _docs_unplaced(text) == [], argv
    for name, text in HELP.items():
        if name not in DOCS_NOT_PLACED:
            assert _docs_unplaced(text) == [], name
    assert _docs_unplaced("see docs/a.md for more. docs/b.md, section 2, in the source repository") == ["docs/a.md"]
