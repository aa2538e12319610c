"""The slim install: ``import attiqa_loss`` needs none of the training packages, every
third-party import is declared in setup.cfg, and a tool whose extra is missing says what
to install in one line."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from attiqa_loss import extras

ROOT = Path(__file__).resolve().parent.parent

#: import name -> pip distribution, for the third-party packages the code imports.
DISTRIBUTIONS = {
    "torch": "torch", "timm": "timm", "safetensors": "safetensors", "numpy": "numpy", "PIL": "pillow",
    "tqdm": "tqdm", "open_clip": "open_clip_torch", "kornia": "kornia", "yaml": "pyyaml",
    "tensorboard": "tensorboard", "scipy": "scipy", "lpips": "lpips",
}
#: the project's own packages, bottom to top (docs/architecture.md).
OUR_PACKAGES = ("attiqa_loss", "attiqa_train", "pretrain", "enhancement")
#: imported only inside ``try``/``except ImportError`` with a fallback (documented optional).
OPTIONAL = {"torchvision", "torchmetrics", "tifffile", "skimage"}
TRAINING_MODULES = ("kornia", "open_clip", "lpips", "tensorboard", "scipy", "attiqa_train", "pretrain", "enhancement",
                    "skimage")


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _requirement_names(text: str) -> set:
    names = set()
    for line in text.strip().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split(">")[0].split("=")[0].split("<")[0].strip().lower())
    return names


def _absolute_imports(package: str):
    """``(path, line, top-level name)`` of every absolute import in ``package`` (at any
    depth: imports inside functions count too)."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                yield path, node.lineno, name.split(".")[0]


def _third_party_imports(package: str) -> set:
    """Top-level names of every absolute import in ``package`` that is not stdlib or ours."""
    ours = set(OUR_PACKAGES) | {"benchmarks"}
    return {top for _, _, top in _absolute_imports(package)
            if top not in ours and top not in sys.stdlib_module_names and top != "__future__"}


@pytest.mark.parametrize("torchmetrics", ["absent", "as installed"])
def test_import_attiqa_loss_loads_no_training_package(torchmetrics):
    """``absent``: torchmetrics cannot be imported (AttiqaMetric's fallback). ``as
    installed``: what torchmetrics loads itself (its ``functional`` package imports
    scipy.signal when scipy is there) is not attiqa_loss's doing, so it is imported first
    and left out of the count."""
    code = (
        "import sys, torch\n"
        + ("sys.modules['torchmetrics'] = None\n" if torchmetrics == "absent" else
           "try:\n    import torchmetrics\nexcept ImportError:\n    pass\n")
        + "before = set(sys.modules)\n"
        "import attiqa_loss\n"
        "from attiqa_loss import AttiqaLoss, AttiqaMetric, load_attiqa, score_folder, compare_folders\n"
        "loss = AttiqaLoss()\n"
        "x = torch.rand(1, 3, 64, 64, requires_grad=True)\n"
        "loss(x).backward()\n"
        "assert x.grad is not None\n"
        f"print(sorted(m for m in {TRAINING_MODULES!r} if m in sys.modules and m not in before))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_install_requires_is_what_the_loss_needs():
    cfg = _setup_cfg()
    assert _requirement_names(cfg["options"]["install_requires"]) == {
        "torch", "timm", "safetensors", "numpy", "pillow", "tqdm"}
    core = {DISTRIBUTIONS[m] for m in _third_party_imports("attiqa_loss") - OPTIONAL}
    assert core <= _requirement_names(cfg["options"]["install_requires"])


#: which of the project's packages each one may import: attiqa_loss at the bottom, the
#: shared training plumbing above it, the two applications side by side on top.
ALLOWED_IMPORTS = {
    "attiqa_loss": set(),
    "attiqa_train": {"attiqa_loss"},
    "pretrain": {"attiqa_loss", "attiqa_train"},
    "enhancement": {"attiqa_loss", "attiqa_train"},
}


def _our_imports(package: str) -> dict:
    """``{our package: [file:line, ...]}`` of every import of another of our packages in ``package``."""
    found: dict = {}
    for path, line, top in _absolute_imports(package):
        if top in OUR_PACKAGES and top != package:
            found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


@pytest.mark.parametrize("package", OUR_PACKAGES)
def test_the_import_picture_has_no_upward_or_sideways_arrow(package):
    found = _our_imports(package)
    wrong = {k: v for k, v in found.items() if k not in ALLOWED_IMPORTS[package]}
    assert not wrong, f"{package} may import only {sorted(ALLOWED_IMPORTS[package])}; found {wrong}"


#: pretrain's sub-packages by pipeline stage, bottom to top: a module may import its own
#: sub-package and those of a lower rank, never one of its own rank or above. synthetic and
#: clip share a rank (the two teachers: neither imports the other); mos needs no training
#: code (it reads a checkpoint) but comes after training in the pipeline; nothing imports
#: diagnostics (the validity and robustness reports, the ship rule).
PRETRAIN_STAGES = {"metrics": 0, "degrade": 1, "synthetic": 2, "clip": 2, "training": 3, "mos": 4, "diagnostics": 5}
#: pretrain's own top-level modules: the command line, above every stage (it loads the
#: commands by their dotted names); no stage imports them.
PRETRAIN_TOP = {"pretrain", "pretrain.cli", "pretrain.help_texts"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported_modules(path: Path):
    """``(line, node, module)`` for every import in the file at ``path`` (at any depth),
    relative ones resolved; ``from package import module`` names the module."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, node, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            submodules = [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")]
            yield from ((node.lineno, node, m) for m in (submodules or [module]))


def _pretrain_graph() -> dict:
    """``{pretrain module: {pretrain module it imports: [file:line, ...]}}``."""
    graph: dict = {}
    for path in sorted((ROOT / "pretrain").rglob("*.py")):
        edges = graph.setdefault(_module_name(path), {})
        for line, _, module in _imported_modules(path):
            if module.split(".")[0] == "pretrain":
                edges.setdefault(module, []).append(f"{path.relative_to(ROOT)}:{line}")
    return graph


def _stage(module: str) -> str:
    return "top" if module in PRETRAIN_TOP else module.split(".")[1]


def test_every_pretrain_module_belongs_to_a_stage():
    packages = {p.parent.name for p in (ROOT / "pretrain").glob("*/__init__.py")}
    assert packages == set(PRETRAIN_STAGES), "a new pretrain sub-package needs its rank in PRETRAIN_STAGES"
    for module in _pretrain_graph():
        in_a_stage = module.count(".") <= 2 and _stage(module) in PRETRAIN_STAGES
        assert module in PRETRAIN_TOP or in_a_stage, f"{module}: pretrain modules live in a stage's sub-package"


@pytest.mark.parametrize("stage", PRETRAIN_STAGES)
def test_a_pretrain_stage_imports_only_the_stages_below_it(stage):
    wrong = {}
    for module, edges in _pretrain_graph().items():
        if module in PRETRAIN_TOP or _stage(module) != stage:
            continue
        for target, where in edges.items():
            other = _stage(target)
            if other != stage and (other == "top" or PRETRAIN_STAGES[other] >= PRETRAIN_STAGES[stage]):
                wrong.setdefault(target, []).extend(where)
    below = ", ".join(f"pretrain.{s}" for s, r in PRETRAIN_STAGES.items() if r < PRETRAIN_STAGES[stage])
    assert not wrong, f"pretrain.{stage} may import only {below or 'no other stage'}; found {wrong}"


def test_training_never_imports_the_diagnostics():
    graph = _pretrain_graph()
    reached, todo = set(), [m for m in graph if _stage(m) == "training"]
    while todo:  # everything a training module loads, directly or through other modules
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph.get(module, {}))
    assert not sorted(m for m in reached if _stage(m) == "diagnostics")
    code = ("import sys\nimport pretrain.training.train, pretrain.training.step\n"
            "print(sorted(m for m in sys.modules if m.startswith('pretrain.diagnostics')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_pretrain_modules_import_no_circle():
    graph = _pretrain_graph()
    state: dict = {}

    def visit(module, path):
        state[module] = "open"
        for target in graph.get(module, {}):
            if state.get(target) == "open":
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])


def _defined_names(module: str) -> set:
    """Names a module defines at its top level (functions, classes, assignments)."""
    path = ROOT.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    names = set()

    def walk(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try)):
                walk(node.body + node.orelse + [n for h in getattr(node, "handlers", []) for n in h.body])

    walk(ast.parse(path.read_text()).body)
    return names


def test_no_pretrain_module_re_exports_a_name():
    """A name is imported from the module that defines it: no module lists an imported name
    in ``__all__``, no sub-package's ``__init__`` imports anything, and no import in
    pretrain/, tests/ or benchmarks/ takes a pretrain name from a module that only imports it."""
    wrong = []
    for path in sorted((ROOT / "pretrain").rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text())
        if path.name == "__init__.py":
            wrong += [f"{module} imports {m}" for _, _, m in _imported_modules(path)]
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                wrong += [f"{module}.__all__ lists {n}, defined elsewhere"
                          for n in ast.literal_eval(node.value) if n not in _defined_names(module)]
    for folder in ("pretrain", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, node, module in _imported_modules(path):
                if not (isinstance(node, ast.ImportFrom) and module.split(".")[0] == "pretrain") \
                        or any(module.endswith(f".{a.name}") for a in node.names):
                    continue
                wrong += [f"{path.relative_to(ROOT)}:{line} imports {a.name} from {module}, which does not define it"
                          for a in node.names if a.name not in _defined_names(module)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package, extra", [("pretrain", "pretrain"), ("enhancement", "enhance"),
                                            ("attiqa_train", "pretrain"), ("attiqa_train", "enhance")])
def test_every_import_of_a_tool_is_declared_in_its_extra(package, extra):
    cfg = _setup_cfg()
    declared = _requirement_names(cfg["options"]["install_requires"]) | _requirement_names(
        cfg["options.extras_require"][extra])
    imported = _third_party_imports(package) - OPTIONAL
    unknown = imported - set(DISTRIBUTIONS)
    assert not unknown, f"{package} imports {sorted(unknown)}: add them to DISTRIBUTIONS and setup.cfg"
    assert {DISTRIBUTIONS[m] for m in imported} <= declared
    # The runtime check names the same packages as the extra.
    assert {dist for _, dist in extras.EXTRAS[extra]} <= declared
    all_extra = _requirement_names(cfg["options.extras_require"]["all"])
    assert _requirement_names(cfg["options.extras_require"][extra]) <= all_extra


def test_missing_modules_names_the_distribution():
    assert extras.missing_modules([("attiqa_no_such_module_xyz", "no-such-dist"), ("json", "json")]) == ["no-such-dist"]
    assert extras.missing_modules([("attiqa_no_such_parent.child", "x")]) == ["x"]


def test_require_extra_message(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "pretrain", (("attiqa_no_such_module_xyz", "kornia"), ("json", "json")))
    with pytest.raises(SystemExit) as info:
        extras.require_extra("attiqa-pretrain", "pretrain")
    assert str(info.value) == ("attiqa-pretrain needs the optional dependencies of attiqa[pretrain] "
                               "(missing: kornia); install them with: pip install -e '.[pretrain]' in the root of "
                               "the attiqa repository (a clone), or pip install 'attiqa[pretrain]' where attiqa is "
                               "installed already")
    monkeypatch.setitem(extras.EXTRAS, "pretrain", (("json", "json"),))
    extras.require_extra("attiqa-pretrain", "pretrain")  # nothing missing: returns


def test_install_hint_gives_the_clone_form_and_every_extra_exists():
    # #37: attiqa is not on the package index, so the hint must work from a clone too.
    for extra in extras.EXTRAS:
        hint = extras.install_hint(extra)
        assert f"pip install -e '.[{extra}]' in the root of the attiqa repository" in hint and "\n" not in hint
        assert extra in _setup_cfg()["options.extras_require"]


def test_pretrain_cli_without_its_extra_is_one_line(monkeypatch, tmp_path):
    from pretrain import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--out", str(tmp_path / "run")])
    assert str(info.value).startswith("attiqa-pretrain needs the optional dependencies of attiqa[pretrain] "
                                      "(missing: open_clip_torch)")
    assert not (tmp_path / "run").exists()


def test_enhance_cli_without_its_extra_is_one_line(monkeypatch, tmp_path, capsys):
    from enhancement import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a))
    for command in (["train", "--out", str(tmp_path / "run")], ["demo", "--out", str(tmp_path / "demo")]):
        with pytest.raises(SystemExit) as info:
            cli.main(command)
        assert str(info.value) == ("attiqa-enhance needs the optional dependencies of attiqa[enhance] "
                                   "(missing: lpips); install them with: " + extras.install_hint("enhance"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists()
    with pytest.raises(SystemExit) as info:  # --help needs no extra
        cli.main(["train", "--help"])
    assert info.value.code == 0 and "usage: attiqa-enhance train" in capsys.readouterr().out


def test_score_logdir_without_tensorboard_is_one_line(monkeypatch, tmp_path):
    from attiqa_loss import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(SystemExit) as info:
        cli.main(["--logdir", str(tmp_path / "tb"), str(tmp_path)])
    assert str(info.value) == ("attiqa-score --logdir needs the optional dependencies of attiqa[tensorboard] "
                               "(missing: tensorboard); install them with: " + extras.install_hint("tensorboard"))


def test_every_package_folder_is_installed_and_the_configs_ship():
    cfg = _setup_cfg()
    listed = _requirement_names(cfg["options"]["packages"])
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".") for top in OUR_PACKAGES
             for p in (ROOT / top).rglob("__init__.py")}
    assert found | {"attiqa_configs"} == listed, "setup.cfg [options] packages must list every package folder"
    assert "attiqa_configs = configs" in cfg["options"]["package_dir"]
    assert {"*.yaml", "*.json"} <= {p.strip() for p in cfg["options.package_data"]["attiqa_configs"].split(",")}
