"""Write failures end a command with one line naming the path and exit status 3
(``attiqa_loss.exits.EXIT_IO``), never a traceback: a read-only output folder, a full
disk during training, a full or closed standard output (issue 38).

A read-only folder is made with ``chmod 0o555``; where that does not stop this process
(root), the :func:`read_only` fixture refuses writes under the folder in Python, as the
operating system would. Tiny random models, CPU only, nothing downloaded.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from enhancement_helpers import REPO, tiny_overrides, write_images, write_quality_model

EXIT_IO = 3  # attiqa_loss.exits.EXIT_IO (imported lazily: the old code had no such module)


# --------------------------------------------------------------------------- helpers


def _writable(folder: Path) -> bool:
    try:
        fd = os.open(folder / ".probe", os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / ".probe")
    return True


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: ``folder`` exists and nothing can be created, written, renamed
    or removed in it (or below it) for the rest of the test."""
    made = []

    def make(folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        made.append(folder)
        if not _writable(folder):  # the operating system refuses: nothing more to do
            return folder
        root = os.path.abspath(folder)

        def inside(path) -> bool:
            try:
                p = os.path.abspath(os.fsdecode(path))
            except TypeError:  # a file descriptor
                return False
            return p == root or p.startswith(root + os.sep)

        def refuse(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

        real_os_open, real_open = os.open, builtins.open

        def os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def py_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and inside(file):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def guard(real, *checked):
            def fn(*args, **kwargs):
                for i in checked:
                    if i < len(args) and inside(args[i]):
                        refuse(args[i])
                return real(*args, **kwargs)
            return fn

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", py_open)
        monkeypatch.setattr(io, "open", py_open)
        monkeypatch.setattr(os, "mkdir", guard(os.mkdir, 0))
        monkeypatch.setattr(os, "replace", guard(os.replace, 0, 1))
        monkeypatch.setattr(os, "rename", guard(os.rename, 0, 1))
        monkeypatch.setattr(os, "unlink", guard(os.unlink, 0))
        monkeypatch.setattr(os, "remove", guard(os.remove, 0))
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("writes")
    write_images(root / "clean", 3, size=(48, 60))
    return {"clean": root / "clean", "quality": write_quality_model(root / "q.safetensors")}


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _enhance_train(assets, out, **settings):
    from enhancement import cli

    args = ["train", "--config", str(REPO / "configs" / "enhance_lowlight.yaml"), "--data", str(assets["clean"]),
            "--out", str(out)]
    return cli.main(args + tiny_overrides(assets["quality"], **{"train.steps": 2, **settings}))


# --------------------------------------------------------------------------- read-only output folders


def test_enhance_infer_into_a_read_only_folder_is_one_line_naming_it(assets, tmp_path, read_only, capsys):
    from enhancement import cli
    from enhancement.unet import create_unet
    from enhancement.weights import save_enhancer

    enhancer = save_enhancer(create_unet(width=4, depth=1, blocks=1), tmp_path / "enhancer.safetensors")
    out = read_only(tmp_path / "out")
    code = cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(assets["clean"]), "--out", str(out),
                     "--attiqa-checkpoint", str(assets["quality"]), "--no-progress"])
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_IO
    assert line.startswith(f"attiqa-enhance infer: I/O error on {out}: ") and "ermission denied" in line


def test_enhance_train_into_a_read_only_folder_is_one_line_naming_it(assets, tmp_path, read_only, capsys):
    out = read_only(tmp_path / "run")
    code = _enhance_train(assets, out)
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_IO
    assert line.startswith(f"attiqa-enhance train: I/O error on {out}: ")


def test_enhance_train_into_a_new_folder_under_a_read_only_one(assets, tmp_path, read_only, capsys):
    parent = read_only(tmp_path / "ro")
    code = _enhance_train(assets, parent / "run")
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_IO and line.startswith(f"attiqa-enhance train: I/O error on {parent / 'run'}: ")


def test_pretrain_train_into_a_read_only_folder_is_one_line(tmp_path, photo_dir, read_only, capsys):
    from pretrain.cli import main

    out = read_only(tmp_path / "run")
    code = main(["train", "--out", str(out), "--images", str(photo_dir), "--no-progress",
                 "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.steps=1",
                 "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "train.threads=1"])
    line = _one_line(capsys.readouterr().err)
    assert code == EXIT_IO and line.startswith(f"attiqa-pretrain train: I/O error on {out}: ")


def test_score_logdir_in_a_read_only_folder_is_one_line_before_scoring(image_folder, tiny_checkpoint_path, tmp_path,
                                                                       read_only, capsys):
    from attiqa_loss import cli

    logdir = read_only(tmp_path / "tb")
    code = cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint_path), "--no-progress",
                     "--logdir", str(logdir)])
    out, err = capsys.readouterr()
    assert code == EXIT_IO and out == ""  # refused before any image was scored
    assert _one_line(err).startswith(f"attiqa-score: I/O error on {logdir}: ")


# --------------------------------------------------------------------------- a full disk


def _fill_the_disk_at(name, monkeypatch):
    """Publishing a file called ``name`` fails as on a full disk (ENOSPC)."""
    from attiqa_loss.io import atomic

    real = atomic._publish

    def full_disk(tmp, path):
        if Path(path).name == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tmp, path)

    monkeypatch.setattr(atomic, "_publish", full_disk)


def test_a_disk_filling_during_training_is_one_line_naming_the_file(assets, tmp_path, monkeypatch, capsys):
    _fill_the_disk_at("state.pt", monkeypatch)
    out = tmp_path / "run"
    code = _enhance_train(assets, out)
    err = capsys.readouterr().err
    assert code == EXIT_IO and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"attiqa-enhance train: I/O error on {out / 'state.pt'}: No space left on device"
    assert not list(out.glob(".state.pt.*.tmp"))  # no temporary file left behind


def test_a_full_disk_in_pretrain_is_one_line_naming_the_file(tmp_path, photo_dir, monkeypatch, capsys):
    from pretrain.cli import main

    _fill_the_disk_at("state.pt", monkeypatch)
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--images", str(photo_dir), "--no-progress",
                 "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.steps=1",
                 "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "train.threads=1",
                 "--set", "synthetic.holdout_every=0"])
    err = capsys.readouterr().err
    assert code == EXIT_IO and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"attiqa-pretrain train: I/O error on {out / 'state.pt'}: No space left on device"


class _FullFile:
    """A file on a disk that fills after ``room`` bytes: ``write`` raises ENOSPC, as the
    operating system does (torch's zip writer turns that into ``RuntimeError: [enforce fail
    at inline_container.cc] unexpected pos ...``)."""

    def __init__(self, real, room=64):
        self._real, self._room = real, room

    def write(self, data):
        size = memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= size
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


def _real_full_disk_at(name, monkeypatch):
    """Writing the bytes of a file called ``name`` fails after 64 bytes as on a full disk."""
    from attiqa_loss.io import atomic

    real_temp, real_fdopen, full = atomic._temp_file, os.fdopen, set()

    def temp_file(path):
        fd, tmp = real_temp(path)
        if Path(path).name == name:
            full.add(fd)
        return fd, tmp

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        if fd in full:  # once: the number is reused by later files
            full.discard(fd)
            return _FullFile(f)
        return f

    monkeypatch.setattr(atomic, "_temp_file", temp_file)
    monkeypatch.setattr(os, "fdopen", fdopen)


def test_torch_save_raises_runtime_error_on_a_full_disk():
    # why the test below matters: torch's own error names no file and is no OSError
    with pytest.raises(RuntimeError, match="unexpected pos"):
        import torch

        torch.save({"x": torch.zeros(1000)}, _FullFile(io.BytesIO()))


@pytest.mark.parametrize("command", ["enhance", "pretrain"])
def test_a_real_full_disk_while_saving_the_state_is_one_line_naming_it(command, assets, tmp_path, photo_dir,
                                                                       monkeypatch, capsys):
    _real_full_disk_at("state.pt", monkeypatch)
    out = tmp_path / "run"
    if command == "enhance":
        code, prog = _enhance_train(assets, out), "attiqa-enhance train"
    else:
        from pretrain.cli import main

        prog = "attiqa-pretrain train"
        code = main(["train", "--out", str(out), "--images", str(photo_dir), "--no-progress",
                     "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.steps=1",
                     "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "train.threads=1",
                     "--set", "synthetic.holdout_every=0"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected pos" not in err
    assert code == EXIT_IO, err
    assert err.strip().splitlines()[-1] == f"{prog}: I/O error on {out / 'state.pt'}: No space left on device"
    assert not list(out.glob(".state.pt.*.tmp")) and not (out / "state.pt").exists()


def _infer_into(assets, tmp_path, out):
    from enhancement import cli
    from enhancement.unet import create_unet
    from enhancement.weights import save_enhancer

    enhancer = save_enhancer(create_unet(width=4, depth=1, blocks=1), tmp_path / "enhancer.safetensors")
    return cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(assets["clean"]), "--out", str(out),
                     "--attiqa-checkpoint", str(assets["quality"]), "--no-progress"])


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS] + ([errno.EDQUOT] if hasattr(errno, "EDQUOT") else []))
def test_infer_onto_a_full_disk_stops_with_one_line_naming_the_file(error, assets, tmp_path, monkeypatch, capsys):
    # Issue 38: each image failed with "cannot write ...: [Errno 28] No space left on device: '...' -> None" and the
    # run went on; a full disk (or quota, or a read-only file system) fails every later write too.
    from attiqa_loss.io import atomic

    first = sorted(p.name for p in assets["clean"].iterdir())[0]
    real = atomic._publish

    def full(tmp, path):
        if Path(path).suffix == ".png":
            raise OSError(error, os.strerror(error))
        return real(tmp, path)

    monkeypatch.setattr(atomic, "_publish", full)
    out = tmp_path / "out"
    code = _infer_into(assets, tmp_path, out)
    out_text, err = capsys.readouterr()
    assert code == EXIT_IO and out_text == ""
    assert _one_line(err) == f"attiqa-enhance infer: I/O error on {out / first}: {os.strerror(error)}"
    assert not list(out.glob("*.png")) and not (out / "scores.csv").exists()


def test_a_write_failure_of_one_output_names_it_without_an_arrow(assets, tmp_path, monkeypatch, capsys):
    from attiqa_loss.io import atomic

    first = sorted(p.name for p in assets["clean"].iterdir())[0]
    real = atomic._publish

    def refused(tmp, path):
        if Path(path).name == first:
            raise OSError(errno.EACCES, "Permission denied", str(tmp), str(path))  # as os.replace says it
        return real(tmp, path)

    monkeypatch.setattr(atomic, "_publish", refused)
    out = tmp_path / "out"
    assert _infer_into(assets, tmp_path, out) == 1
    err = capsys.readouterr().err
    assert f"cannot write {out / first}: Permission denied\n" in err and "-> None" not in err and ".tmp" not in err
    assert len(list(out.glob("*.png"))) == 2  # the other images were written


def test_a_renamed_error_never_prints_an_arrow_to_none(tmp_path, monkeypatch):
    from attiqa_loss.io import atomic, atomic_write

    def refused(tmp, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp), str(path))

    monkeypatch.setattr(atomic, "_publish", refused)
    with pytest.raises(OSError) as info:
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"x")
    assert str(info.value) == f"[Errno {errno.ENOSPC}] No space left on device: '{tmp_path / 'a.bin'}'"


def test_every_atomic_write_error_names_the_destination_not_the_temporary_file(tmp_path, monkeypatch):
    from attiqa_loss.io import atomic, atomic_path, atomic_write

    def full_disk(tmp, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "_publish", full_disk)
    for writer in (atomic_write, atomic_path):
        target = tmp_path / f"{writer.__name__}.bin"
        with pytest.raises(OSError) as info:
            with writer(target) as f:
                f.write(b"x") if writer is atomic_write else f.write_bytes(b"x")
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- standard output


class _FullStream(io.StringIO):
    """A standard output on a full disk: every write and flush fails with ENOSPC."""

    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_score_output_to_a_full_disk_is_one_line_and_exit_status_3(image_folder, tiny_checkpoint_path, monkeypatch,
                                                                   capsys):
    from attiqa_loss import cli

    monkeypatch.setattr(sys, "stdout", _FullStream())
    code = cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint_path), "--no-progress",
                     "--format", "csv"])
    assert code == EXIT_IO
    assert _one_line(capsys.readouterr().err) == "attiqa-score: I/O error on <standard output>: No space left on device"


@pytest.mark.skipif(not (os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)),
                    reason="no /dev/full character device here")
def test_score_csv_to_dev_full_exits_3(image_folder, tiny_checkpoint_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "attiqa_loss.cli", str(image_folder()), "--checkpoint",
                               str(tiny_checkpoint_path), "--no-progress", "--format", "csv"],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert proc.returncode == EXIT_IO
    assert _one_line(proc.stderr) == "attiqa-score: I/O error on <standard output>: No space left on device"


def test_score_with_standard_output_closed_exits_non_zero(image_folder, tiny_checkpoint_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "attiqa_loss.cli", str(image_folder()), "--checkpoint",
                           str(tiny_checkpoint_path), "--no-progress"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, timeout=300,
                          preexec_fn=lambda: os.close(1))
    assert proc.returncode == EXIT_IO
    assert _one_line(proc.stderr).startswith("attiqa-score: I/O error on <standard output>: it is closed")


def test_every_command_states_exit_status_3_in_its_help():
    from attiqa_loss.cli import build_parser as score_parser
    from enhancement.cli import build_parser as enhance_parser
    from pretrain.cli import HELP_TEXTS_FILE  # noqa: F401  (the stored texts are checked by test_cli_help)
    from pretrain.help_texts import HELP

    texts = [score_parser().format_help(), enhance_parser().format_help()]
    sub = enhance_parser()._subparsers._group_actions[0].choices
    texts += [sub["train"].format_help(), sub["infer"].format_help()]
    texts += [HELP[name] for name in HELP]
    for text in texts:
        assert "3 if a file or folder could not be written or read" in " ".join(text.split())


def test_an_os_error_made_from_a_message_alone_keeps_its_message(tmp_path, monkeypatch):
    from attiqa_loss.io import atomic, atomic_write

    def broken(tmp, path):
        raise OSError("disk full")

    monkeypatch.setattr(atomic, "_publish", broken)
    with pytest.raises(OSError, match="^disk full$"):
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"x")


# --------------------------------------------------------------------------- every command that prints results


def _reports(tmp_path):
    """Robustness and validity reports without rows: the verdict reads them as MISSING (FAIL, status 1)."""
    (tmp_path / "rob").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "rob" / "robustness.csv").write_text("metric\n")
    (tmp_path / "val" / "validity.csv").write_text("attribute\n")
    return ["verdict", "--robustness", str(tmp_path / "rob"), "--validity", str(tmp_path / "val")]


def _printing_command(which, assets, tmp_path, photo_dir, tiny_checkpoint_path):
    """``(prog, run)``: a command that prints its results on the standard output."""
    if which == "infer":
        return "attiqa-enhance infer", lambda: _infer_into(assets, tmp_path, tmp_path / "out")
    from pretrain.cli import main

    if which == "validity":
        return "attiqa-pretrain validity", lambda: main(
            ["validity", "--images", str(photo_dir), "--all-images", "--checkpoint", str(tiny_checkpoint_path),
             "--levels", "2", "--max-side", "48", "--out", str(tmp_path / "out")])
    return "attiqa-pretrain verdict", lambda: main(_reports(tmp_path))


@pytest.mark.parametrize("which", ["infer", "validity", "verdict"])
def test_commands_that_print_results_refuse_a_closed_standard_output(which, assets, tmp_path, photo_dir,
                                                                      tiny_checkpoint_path, monkeypatch, capsys):
    # Issue 38: `attiqa-enhance infer >&-`, `attiqa-pretrain validity >&-`, `verdict >&-` printed nothing, exit 0.
    prog, run = _printing_command(which, assets, tmp_path, photo_dir, tiny_checkpoint_path)
    monkeypatch.setattr(sys, "stdout", None)  # how Python starts with descriptor 1 closed
    code = run()
    assert code == EXIT_IO
    assert _one_line(capsys.readouterr().err) == (f"{prog}: I/O error on <standard output>: it is closed; "
                                                  "redirect it to a file or a pipe")
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("which", ["infer", "verdict"])
def test_commands_that_print_results_name_a_full_standard_output(which, assets, tmp_path, photo_dir,
                                                                  tiny_checkpoint_path, monkeypatch, capsys):
    # Issue 38: "I/O error: No space left on device", naming nothing.
    prog, run = _printing_command(which, assets, tmp_path, photo_dir, tiny_checkpoint_path)
    monkeypatch.setattr(sys, "stdout", _FullStream())
    code = run()
    err = capsys.readouterr().err
    assert code == EXIT_IO and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"{prog}: I/O error on <standard output>: No space left on device"


def test_a_print_that_fails_names_the_standard_output():
    from attiqa_loss.exits import run_reporting_io_errors

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    real, sys.stdout = sys.stdout, Full()
    try:
        errors = io.StringIO()
        real_err, sys.stderr = sys.stderr, errors
        try:
            code = run_reporting_io_errors("prog", lambda: print("x" * 100000) or 0)
        finally:
            sys.stderr = real_err
    finally:
        sys.stdout = real
    assert code == EXIT_IO and errors.getvalue() == "prog: I/O error on <standard output>: No space left on device\n"


class _ClosedPipe(io.StringIO):
    """A standard output whose reader has gone (``| head -1``): writes fail with EPIPE."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_score_into_a_closed_pipe_ends_quietly(image_folder, tiny_checkpoint_path, monkeypatch, capsys):
    # Issue 38: `attiqa-score photos | head -1` ended with "I/O error on <standard output>: Broken pipe", exit 3.
    from attiqa_loss import cli
    from attiqa_loss.exits import EXIT_PIPE

    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    code = cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint_path), "--no-progress"])
    assert code == EXIT_PIPE == 141
    assert capsys.readouterr().err == ""


def test_score_piped_into_a_reader_that_stops_ends_quietly(image_folder, tiny_checkpoint_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "attiqa_loss.cli", str(image_folder()), "--checkpoint",
                             str(tiny_checkpoint_path), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141
    assert err == ""


# --------------------------------------------------------------------------- the atomic writer's temporary file


def test_verdict_record_into_a_read_only_folder_names_the_trials_file(tmp_path, read_only, capsys):
    # Issue 38: the message named the temporary file .trials.csv.xxxx.tmp, not trials.csv.
    from pretrain.cli import main

    trials = read_only(tmp_path / "ro") / "trials.csv"
    code = main(_reports(tmp_path) + ["--record", str(trials), "--trial", "t"])
    err = capsys.readouterr().err
    assert code == EXIT_IO and ".tmp" not in err and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"attiqa-pretrain verdict: I/O error on {trials}: Permission denied"


def test_a_temporary_file_that_cannot_be_created_is_named_as_the_destination(tmp_path, read_only):
    from attiqa_loss.io import atomic_path, atomic_write

    folder = read_only(tmp_path / "ro")
    for writer in (atomic_write, atomic_path):
        target = folder / f"{writer.__name__}.bin"
        with pytest.raises(OSError) as info:
            with writer(target):
                pass
        assert info.value.filename == str(target) and ".tmp" not in str(info.value)
