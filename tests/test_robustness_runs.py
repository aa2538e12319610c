"""Finished work is never replaced by accident and two processes never write one folder
(issue 16, protected runs): --resume/--overwrite in both trainers, lock files for runs
and label outputs, --resume without a state or with a changed config, infer's --out.
Tiny random models, CPU only, nothing downloaded."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml


from enhancement_helpers import REPO, smooth_texture, tiny_overrides, write_images, write_quality_model

LOCK_NAME = "attiqa.lock"  # attiqa_train.rundir.LOCK_NAME (imported lazily: the old code had no such module)
MANIFEST_NAME = "attiqa-run.json"  # attiqa_train.rundir.MANIFEST_NAME
INFER_RECORD = "attiqa-infer.jsonl"  # enhancement.infer_record.RECORD_NAME

# --------------------------------------------------------------------------- helpers


def _pretrain_args(out, photo_dir, *extra):
    return ["train", "--out", str(out), "--images", str(photo_dir), "--no-progress",
            "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.steps=2",
            "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "synthetic.holdout_every=0",
            "--set", "train.state_every=1", "--set", "train.threads=1", *extra]


def _pretrain(out, photo_dir, *extra):
    """``attiqa-pretrain train`` in this process: (0, "") or (None, the exit message)."""
    from pretrain.cli import main

    try:
        return main(_pretrain_args(out, photo_dir, *extra)), ""
    except SystemExit as exc:
        return None, str(exc)


@pytest.fixture(scope="module")
def enhance_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("enhance_runs")
    write_images(root / "clean", 5, size=(48, 60))
    return {"root": root, "clean": root / "clean", "quality": write_quality_model(root / "q.safetensors")}


def _enhance(assets, out, *extra, **overrides):
    from enhancement import cli

    settings = {"train.steps": 2, **overrides}
    args = ["train", "--config", str(REPO / "configs" / "enhance_lowlight.yaml"), "--data", str(assets["clean"]),
            "--out", str(out)]
    return cli.main(args + tiny_overrides(assets["quality"], **settings) + list(extra))


_HOLD = """
import sys, time
from attiqa_train.rundir import acquire_lock
lock = acquire_lock(sys.argv[1], "a test holder")
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_by_other_process():
    """``hold(folder)``: another (live) process takes ``folder``'s lock and keeps it."""
    procs = []

    def hold(folder):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, env=env, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid, "host": host or socket.gethostname(), "command": "attiqa-pretrain train",
            "started": "2024-01-01T00:00:00+00:00"}
    (folder / LOCK_NAME).write_text(json.dumps(info))


# --------------------------------------------------------------------------- pretrain train


def test_pretrain_refuses_an_out_holding_a_finished_run(photo_dir, tmp_path):
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir) == (0, "")
    weights = (out / "checkpoint.safetensors").read_bytes()
    events = sorted((out / "tb").iterdir())
    code, message = _pretrain(out, photo_dir, "--set", "train.lr=0.01")
    assert code is None and "\n" not in message
    assert message.startswith(f"attiqa-pretrain train: {out} already holds a run (config.yaml, state.pt, "
                              "checkpoint.safetensors, tb)")
    assert "--resume continues it, --overwrite replaces it" in message
    assert (out / "checkpoint.safetensors").read_bytes() == weights and sorted((out / "tb").iterdir()) == events
    assert not (out / LOCK_NAME).exists()


def test_pretrain_refuses_a_started_run_too(photo_dir, tmp_path):
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir, "--set", "train.steps=1") == (0, "")  # a recorded run, stopped before its state
    (out / "state.pt").unlink()
    code, message = _pretrain(out, photo_dir)
    assert code is None and f"{out} already holds a run (config.yaml, checkpoint.safetensors, tb)" in message


def test_pretrain_overwrite_replaces_the_run_and_says_so(photo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir) == (0, "")
    (out / "notes.txt").write_text("mine")
    old_events = {p.name for p in (out / "tb").rglob("events.*")}
    capsys.readouterr()
    assert _pretrain(out, photo_dir, "--overwrite") == (0, "")
    err = capsys.readouterr().err
    assert (f"attiqa-pretrain train: --overwrite: removed the previous run's config.yaml, state.pt, "
            f"checkpoint.safetensors, tb from {out}") in err
    assert old_events and not old_events & {p.name for p in (out / "tb").rglob("events.*")}  # no mixed events
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files go
    assert (out / "checkpoint.safetensors").is_file()
    record = json.loads((out / MANIFEST_NAME).read_text())  # what --overwrite may delete next time
    assert record["files"] == ["config.yaml", "state.pt", "checkpoint.safetensors", "tb"]


def test_pretrain_overwrite_never_deletes_files_no_run_wrote(photo_dir, tmp_path):
    # Issue 38: the user's own config.yaml and tb/ in --out were replaced / deleted by --overwrite.
    out = tmp_path / "proj"
    (out / "tb").mkdir(parents=True)
    (out / "tb" / "mine.txt").write_text("my notes")
    (out / "config.yaml").write_text("my: config\n")
    code, message = _pretrain(out, photo_dir, "--overwrite")
    assert code is None and "\n" not in message
    assert message == (f"attiqa-pretrain train: --overwrite: {out} holds config.yaml, tb, but no record of a run "
                       f"that wrote them ({out / MANIFEST_NAME} is missing), so nothing is deleted; move them out of "
                       "the folder (or delete them yourself if they are an earlier run's) or choose another --out")
    assert (out / "config.yaml").read_text() == "my: config\n" and (out / "tb" / "mine.txt").read_text() == "my notes"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "tb"]  # no lock, no record left behind


def test_a_folder_of_the_users_files_never_suggests_overwrite(photo_dir, tmp_path):
    # Issue 38: without a run record, the refusal suggested --overwrite, which is then refused.
    out = tmp_path / "proj"
    (out / "tb").mkdir(parents=True)
    (out / "config.yaml").write_text("train: {steps: 2}\n")  # valid: --resume reads it as the config
    missing = f"{out} holds config.yaml, tb, but no record of a run that wrote them ({out / MANIFEST_NAME} is missing)"
    code, message = _pretrain(out, photo_dir)
    assert code is None and "\n" not in message and "--overwrite" not in message and "--resume" not in message
    assert message == (f"attiqa-pretrain train: {missing}: they are not a run to continue or replace, so choose "
                       "another --out (or move them out of the folder)")
    code, message = _pretrain(out, photo_dir, "--resume")
    assert code is None and "--overwrite" not in message
    assert message == (f"attiqa-pretrain train: --resume: no training state at {out / 'state.pt'}; {missing}: they "
                       "are not a run to continue or replace, so choose another --out (or move them out of the folder)")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "tb"]


def test_pretrain_resume_of_a_run_without_a_record_records_it(photo_dir, tmp_path):
    # A run folder of an earlier version has no record: --resume (the user says it is a run) adds one.
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir) == (0, "")
    (out / MANIFEST_NAME).unlink()
    code, message = _pretrain(out, photo_dir, "--overwrite")
    assert code is None and "but no record of a run that wrote them" in message
    assert _pretrain(out, photo_dir, "--resume", "--set", "train.log_every=7") == (0, "")
    assert json.loads((out / MANIFEST_NAME).read_text())["files"] == ["config.yaml", "state.pt",
                                                                        "checkpoint.safetensors", "tb"]


def test_pretrain_resume_without_a_state_is_refused(photo_dir, tmp_path):
    code, message = _pretrain(tmp_path / "new", photo_dir, "--resume")
    assert code is None
    assert message == (f"attiqa-pretrain train: --resume: no training state at {tmp_path / 'new' / 'state.pt'} "
                       "(the folder does not exist)")
    assert not (tmp_path / "new").exists()
    started = tmp_path / "started"
    assert _pretrain(started, photo_dir, "--set", "train.steps=1") == (0, "")
    (started / "state.pt").unlink()  # a recorded run without a state
    code, message = _pretrain(started, photo_dir, "--resume")
    assert code is None and f"--resume: no training state at {started / 'state.pt'}" in message
    assert "--overwrite starts the run again there" in message


def test_pretrain_resume_with_a_changed_config_is_refused_naming_the_keys(photo_dir, tmp_path):
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir) == (0, "")
    state = (out / "state.pt").read_bytes()
    code, message = _pretrain(out, photo_dir, "--resume", "--set", "train.lr=0.01", "--set", "synthetic.crop=40")
    assert code is None and "\n" not in message
    assert f"--resume: the config differs from the run's {out / 'config.yaml'} in ['synthetic.crop', 'train.lr']" in message
    assert (out / "state.pt").read_bytes() == state
    # Keys that do not change the weights may change; the saved config says what ran last.
    assert _pretrain(out, photo_dir, "--resume", "--set", "train.log_every=7", "--set", "val.levels=4") == (0, "")
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["log_every"] == 7


def test_pretrain_resume_reuses_the_runs_config(photo_dir, tmp_path, monkeypatch):
    import pretrain.training.train as train_module
    from pretrain.cli import main

    out = tmp_path / "run"
    assert _pretrain(out, photo_dir, "--set", "train.steps=3") == (0, "")
    seen = {}
    def fake_train(cfg, out, **kw):
        seen["cfg"] = cfg
        return out / "checkpoint.safetensors"  # the first run's export, which the CLI checks

    monkeypatch.setattr(train_module, "train", fake_train)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert seen["cfg"].train.steps == 3 and seen["cfg"].synthetic.images == [str(photo_dir)]


def test_pretrain_resume_and_overwrite_exclude_each_other(photo_dir, tmp_path):
    code, message = _pretrain(tmp_path / "run", photo_dir, "--resume", "--overwrite")
    assert code is None and "give one of them" in message


def test_pretrain_out_that_is_a_file_is_a_one_line_error(photo_dir, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, message = _pretrain(target, photo_dir)
    assert code is None and message == f"attiqa-pretrain train: --out {target} is a file, not a folder"


# --------------------------------------------------------------------------- locks


def test_second_pretrain_process_is_refused_naming_the_holder(photo_dir, tmp_path, held_by_other_process):
    out = tmp_path / "run"
    holder = held_by_other_process(out)
    code, message = _pretrain(out, photo_dir)
    assert code is None and "\n" not in message
    assert f"{out} is in use by process {holder.pid} on host {socket.gethostname()!r} (a test holder, since " in message
    assert "a lock of a process that no longer runs on the same host is taken over automatically" in message
    assert not (out / "config.yaml").exists()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(photo_dir, tmp_path, capsys):
    out = tmp_path / "run"
    pid = _dead_pid()
    _write_lock(out, pid)
    assert _pretrain(out, photo_dir) == (0, "")
    err = capsys.readouterr().err
    assert f"attiqa-pretrain train: taking over the lock of process {pid} on host {socket.gethostname()!r}" in err
    assert "that process no longer runs" in err
    assert not (out / LOCK_NAME).exists()  # released at the end


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    from attiqa_train.rundir import RunLockError, acquire_lock

    _write_lock(tmp_path / "run", _dead_pid(), host="some-other-machine")
    with pytest.raises(RunLockError, match=r"on host 'some-other-machine', not this one: if that process is gone, "
                                           rf"delete {tmp_path / 'run' / LOCK_NAME}"):
        acquire_lock(tmp_path / "run", "test")


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    from attiqa_train.rundir import acquire_lock

    if not Path(f"/proc/{os.getpid()}/stat").is_file():
        pytest.skip("process start times are read from /proc (Linux)")
    # The lock names a live pid (this process's parent) but a start time that is not its own.
    folder = tmp_path / "run"
    _write_lock(folder, os.getppid())
    info = json.loads((folder / LOCK_NAME).read_text())
    (folder / LOCK_NAME).write_text(json.dumps({**info, "pid_start": "1"}))
    with acquire_lock(folder, "test") as lock:
        assert lock.info["pid"] == os.getpid()


def test_lock_is_released_when_the_run_fails(tmp_path):
    from attiqa_train.rundir import acquire_lock

    with pytest.raises(KeyError):
        with acquire_lock(tmp_path / "run", "test"):
            raise KeyError("boom")
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_second_enhance_process_is_refused(enhance_assets, tmp_path, held_by_other_process, capsys):
    out = tmp_path / "run"
    holder = held_by_other_process(out)
    assert _enhance(enhance_assets, out) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attiqa-enhance train: error: {out} is in use by process {holder.pid}")
    assert "\n" not in err


def test_second_label_process_is_refused(tmp_path, write_png, held_by_other_process):
    from pretrain.clip.label_job import label_files
    from pretrain.clip.model import create_clip_teacher
    from attiqa_train.rundir import RunLockError

    photos = [write_png(tmp_path / "photos" / f"{i}.png", 64, 64, seed=i) for i in range(2)]
    out = tmp_path / "labels"
    holder = held_by_other_process(out)
    teacher = create_clip_teacher(str(REPO / "configs" / "open_clip_tiny.json"), "none")
    with pytest.raises(RunLockError, match=rf"{out} is in use by process {holder.pid}"):
        label_files(photos, out, teacher, workers=0, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written, nothing deleted
    holder.kill()
    holder.wait()
    manifest = label_files(photos, out, teacher, workers=0, progress=False)  # its lock is stale now
    assert manifest["counts"]["labelled"] == 2 and not (out / LOCK_NAME).exists()


def test_label_cli_refuses_a_second_process_in_one_line(tmp_path, write_png, held_by_other_process):
    from pretrain.cli import main

    write_png(tmp_path / "photos" / "a.png", 64, 64)
    out = tmp_path / "labels"
    holder = held_by_other_process(out)
    with pytest.raises(SystemExit) as info:
        main(["label", "--out", str(out), "--images", str(tmp_path / "photos"), "--workers", "0",
              "--clip-model", str(REPO / "configs" / "open_clip_tiny.json"), "--clip-pretrained", "none",
              "--set", "label.device=cpu"])
    message = str(info.value)
    assert message.startswith(f"error: {out} is in use by process {holder.pid}") and "\n" not in message
    assert not (out / "config.yaml").exists()


def test_pretrain_overwrite_never_deletes_a_users_file_inside_the_runs_tb(photo_dir, tmp_path):
    # Issue 38: attiqa-run.json recorded the folder tb as a whole, so --overwrite deleted tb/my_own_plot.txt.
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir) == (0, "")
    record = json.loads((out / MANIFEST_NAME).read_text())
    events = sorted(str(p.relative_to(out)) for p in (out / "tb").rglob("*") if p.is_file())
    assert events and sorted(record["contents"]) == events  # the run knows which files it wrote in tb/
    (out / "tb" / "my_own_plot.txt").write_text("mine")
    code, message = _pretrain(out, photo_dir, "--overwrite")
    assert code is None and "\n" not in message
    assert message == (f"attiqa-pretrain train: --overwrite: {out} holds tb/my_own_plot.txt, which no run recorded "
                       f"writing ({out / MANIFEST_NAME}), so nothing is deleted; move them out of the folder or choose "
                       "another --out")
    assert (out / "tb" / "my_own_plot.txt").read_text() == "mine" and (out / "state.pt").is_file()
    assert sorted(str(p.relative_to(out)) for p in (out / "tb").rglob("*") if p.is_file()) == sorted(
        events + ["tb/my_own_plot.txt"])
    # a file the user adds before --resume is not the run's either
    assert _pretrain(out, photo_dir, "--resume", "--set", "train.log_every=7") == (0, "")
    assert "tb/my_own_plot.txt" not in json.loads((out / MANIFEST_NAME).read_text())["contents"]
    code, message = _pretrain(out, photo_dir, "--overwrite")
    assert code is None and "holds tb/my_own_plot.txt, which no run recorded writing" in message
    (out / "tb" / "my_own_plot.txt").unlink()
    assert _pretrain(out, photo_dir, "--overwrite") == (0, "")  # the run's own files only: replaced
    assert json.loads((out / MANIFEST_NAME).read_text())["contents"] == sorted(
        str(p.relative_to(out)) for p in (out / "tb").rglob("*") if p.is_file())


def test_overwrite_replaces_tensorboard_events_of_a_run_killed_before_it_recorded_them(photo_dir, tmp_path):
    # A run killed before its first state save (or recorded before "contents" existed) has event files in tb/
    # that its record does not list: TensorBoard's own files, replaced; anything else in tb/ is refused.
    out = tmp_path / "run"
    assert _pretrain(out, photo_dir) == (0, "")
    record = json.loads((out / MANIFEST_NAME).read_text())
    del record["contents"]
    (out / MANIFEST_NAME).write_text(json.dumps(record))
    assert _pretrain(out, photo_dir, "--overwrite") == (0, "")


# --------------------------------------------------------------------------- enhance train


def test_enhance_refuses_a_finished_run_and_overwrite_replaces_it(enhance_assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert _enhance(enhance_assets, out) == 0
    weights = (out / "enhancer.safetensors").read_bytes()
    capsys.readouterr()
    assert _enhance(enhance_assets, out, **{"train.lr": 0.01}) == 2
    err = capsys.readouterr().err
    assert f"attiqa-enhance train: error: {out} already holds a run (config.yaml, state.pt, " \
           "enhancer.safetensors, metrics.json, tb)" in err
    assert (out / "enhancer.safetensors").read_bytes() == weights
    assert _enhance(enhance_assets, out, "--overwrite", **{"train.lr": 0.01}) == 0
    err = capsys.readouterr().err
    assert "attiqa-enhance train: --overwrite: removed the previous run's config.yaml, state.pt" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 0.01


def test_enhance_overwrite_never_deletes_files_no_run_wrote(enhance_assets, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"mine": 1}')
    assert _enhance(enhance_assets, out, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attiqa-enhance train: error: --overwrite: {out} holds metrics.json, but no record of a "
                          "run that wrote them") and "\n" not in err
    assert (out / "metrics.json").read_text() == '{"mine": 1}' and sorted(p.name for p in out.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("change, keys", [({"train.lr": 0.01}, "['train.lr']"),
                                          ({"train.steps": 3}, "['train.steps']"),
                                          ({"data.crop_size": 40}, "['data.crop_size']")])
def test_enhance_resume_with_a_changed_config_is_refused(enhance_assets, tmp_path, capsys, change, keys):
    out = tmp_path / "run"
    assert _enhance(enhance_assets, out) == 0
    checkpoint = (out / "state.pt").read_bytes()
    capsys.readouterr()
    assert _enhance(enhance_assets, out, "--resume", **change) == 2
    err = capsys.readouterr().err
    assert f"attiqa-enhance train: error: --resume: the config differs from the run's {out / 'config.yaml'} in {keys}" in err
    assert (out / "state.pt").read_bytes() == checkpoint


def test_enhance_resume_allows_keys_that_do_not_change_the_weights(enhance_assets, tmp_path):
    out = tmp_path / "run"
    assert _enhance(enhance_assets, out) == 0
    assert _enhance(enhance_assets, out, "--resume", **{"train.log_every": 1, "val.grid_images": 1,
                                                        "data.num_workers": 0}) == 0


# --------------------------------------------------------------------------- infer


@pytest.fixture
def infer_setup(tmp_path):
    from attiqa_loss.io import save_image
    from enhancement.unet import UNet
    from enhancement.weights import save_enhancer

    quality = write_quality_model(tmp_path / "q.safetensors")
    torch.manual_seed(0)
    enhancer = save_enhancer(UNet(width=4, depth=2, blocks=1), tmp_path / "enhancer.safetensors",
                             training={"attiqa_checkpoint": str(quality)})
    data = tmp_path / "in"
    save_image(smooth_texture(40, 44, seed=1), data / "a.png")
    save_image(smooth_texture(36, 40, seed=2), data / "sub" / "b.png")
    return {"enhancer": enhancer, "data": data}


def _infer(setup, out, *extra, data=None):
    from enhancement import cli

    return cli.main(["infer", "--checkpoint", str(setup["enhancer"]), "--data", str(data or setup["data"]),
                     "--out", str(out), "--no-progress", *extra])


def test_infer_refuses_out_inside_data(infer_setup, capsys):
    data = infer_setup["data"]
    assert _infer(infer_setup, data / "enhanced") == 2
    err = capsys.readouterr().err
    assert f"attiqa-enhance infer: error: --out {data / 'enhanced'} is inside --data {data}" in err
    assert not (data / "enhanced").exists()


def test_infer_refuses_data_inside_out(infer_setup, capsys):
    data = infer_setup["data"]
    assert _infer(infer_setup, data.parent) == 2
    assert f"--data {data} is inside --out {data.parent}" in capsys.readouterr().err


def test_infer_never_overwrites_without_overwrite(infer_setup, tmp_path, capsys):
    out = tmp_path / "out"
    assert _infer(infer_setup, out) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _infer(infer_setup, out) == 2
    err = capsys.readouterr().err
    assert f"attiqa-enhance infer: error: 3 output file(s) already exist in {out}" in err
    assert "pass --overwrite to replace them" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert _infer(infer_setup, out, "--overwrite") == 0
    assert "--overwrite: 3 existing output file(s)" in capsys.readouterr().err


def test_infer_overwrite_never_replaces_a_file_infer_did_not_write(infer_setup, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"the user's own a.png")
    for extra in ((), ("--overwrite",)):
        assert _infer(infer_setup, out, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"attiqa-enhance infer: error: {out} holds 1 file(s) with the names of outputs, e.g. "
                              f"{out / 'a.png'}, but {out / INFER_RECORD}, the record of what infer wrote there, "
                              "is missing, so they are never replaced") and "\n" not in err
        assert (out / "a.png").read_bytes() == b"the user's own a.png"
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def _outputs(out):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (INFER_RECORD, LOCK_NAME)}


def test_interrupted_infer_resumes_and_equals_an_uninterrupted_run(infer_setup, tmp_path, monkeypatch, capsys):
    # Issue 38: infer killed midway left outputs but no scores.csv; a rerun needed --overwrite and redid everything.
    import enhancement.infer as infer_module
    from attiqa_loss.io import save_image

    save_image(smooth_texture(38, 42, seed=3), infer_setup["data"] / "c.png")
    reference = tmp_path / "reference"
    assert _infer(infer_setup, reference) == 0
    written = []

    def interrupted(image, path, **kw):  # Ctrl-C while the third image is being written
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        save_image(image, path, **kw)

    out = tmp_path / "out"
    monkeypatch.setattr(infer_module, "save_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _infer(infer_setup, out)
    assert len(written) == 2 and not (out / "scores.csv").exists() and not (out / LOCK_NAME).exists()
    capsys.readouterr()
    # Other settings do not mix into the interrupted run.
    monkeypatch.setattr(infer_module, "save_image", save_image)
    assert _infer(infer_setup, out, "--max-side", "512") == 2
    assert (f"attiqa-enhance infer: error: {out} holds an interrupted run with other settings (--max-side differ"
            in capsys.readouterr().err)
    rerun = []
    monkeypatch.setattr(infer_module, "save_image", lambda image, path, **kw: (rerun.append(path),
                                                                                  save_image(image, path, **kw)))
    assert _infer(infer_setup, out) == 0  # the same command again, no --overwrite
    err = capsys.readouterr().err
    assert f"infer: continuing the interrupted run in {out}: 2 of 3 image(s) already written, 1 to go" in err
    assert len(rerun) == 1 and rerun[0] not in written  # only the rest
    assert _outputs(out) == _outputs(reference)  # images and scores.csv, byte for byte
    assert _infer(infer_setup, out) == 2  # finished: a new run needs --overwrite
    assert "4 output file(s) already exist" in capsys.readouterr().err


def test_infer_record_survives_a_torn_last_line(tmp_path):
    from enhancement.infer_record import InferRecord

    record = InferRecord(tmp_path)
    record.begin({"--format": "same"})
    record.start("a.png")
    record.close()
    with open(tmp_path / INFER_RECORD, "ab") as f:
        f.write(b'{"event":"done","pa')  # killed while appending
    again = InferRecord.read(tmp_path)
    assert again.owned == {"a.png"} and again.settings == {"--format": "same"} and not again.finished
    again.start("b.png")
    again.close()
    assert InferRecord.read(tmp_path).owned == {"a.png", "b.png"}


def test_infer_into_a_folder_with_other_files_is_fine(infer_setup, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "unrelated.png").write_bytes(b"not ours")
    assert _infer(infer_setup, out) == 0
    assert (out / "unrelated.png").read_bytes() == b"not ours"


def test_infer_of_a_single_file_never_replaces_it(infer_setup, capsys):
    data = infer_setup["data"]
    assert _infer(infer_setup, data, "--overwrite", data=data / "a.png") == 2
    assert "--out must differ from the input folder" in capsys.readouterr().err
    assert _infer(infer_setup, data / "sub" / "..", "--overwrite", data=data / "a.png") == 2


def test_demo_refuses_an_earlier_run_unless_overwrite(tmp_path, tiny_checkpoint_path, write_png, capsys):
    from enhancement.demo import main

    photos = tmp_path / "photos"
    for i in range(6):
        write_png(photos / f"{i}.png", 64, 64, seed=i)
    out = tmp_path / "demo"
    args = ["--out", str(out), "--steps", "1", "--checkpoint", str(tiny_checkpoint_path), "--data", str(photos),
            "--set", "data.crop_size=32", "--set", "val.crop_size=32", "--set", "data.val_images=2",
            "--set", "model.width=4", "--set", "model.depth=2", "--set", "train.batch_size=2",
            "--set", "loss.lpips_weight=0", "--set", "val.lpips=false", "--set", "train.progress=false"]
    assert main(args) == 0
    weights = (out / "enhancer.safetensors").read_bytes()
    with pytest.raises(SystemExit, match=r"attiqa-enhance demo: .* already holds a run \(config.yaml, state.pt"):
        main(args)
    assert (out / "enhancer.safetensors").read_bytes() == weights
    assert main(args + ["--overwrite"]) == 0
    assert "--overwrite: removed the previous run's" in capsys.readouterr().err


def test_demo_never_replaces_files_no_run_wrote(tmp_path, tiny_checkpoint_path, write_png):
    from enhancement.demo import main

    photos = tmp_path / "photos"
    for i in range(6):
        write_png(photos / f"{i}.png", 64, 64, seed=i)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "comparison.png").write_bytes(b"my own picture")
    args = ["--out", str(out), "--steps", "1", "--checkpoint", str(tiny_checkpoint_path), "--data", str(photos),
            "--set", "data.crop_size=32", "--set", "val.crop_size=32", "--set", "data.val_images=2",
            "--set", "model.width=4", "--set", "model.depth=2", "--set", "train.batch_size=2",
            "--set", "loss.lpips_weight=0", "--set", "val.lpips=false", "--set", "train.progress=false"]
    with pytest.raises(SystemExit, match=rf"demo: {out} holds comparison.png, but no record of a run that wrote them "
                                         r".*: they are not a run to replace, so choose another --out") as info:
        main(args)
    assert "--overwrite" not in str(info.value)
    with pytest.raises(SystemExit, match=rf"--overwrite: {out} holds comparison.png, but no record of a run"):
        main(args + ["--overwrite"])
    assert (out / "comparison.png").read_bytes() == b"my own picture"
    assert sorted(p.name for p in out.iterdir()) == ["comparison.png"]


def test_enhance_and_demo_overwrite_never_delete_a_users_file_inside_tb(enhance_assets, tmp_path, tiny_checkpoint_path,
                                                                        write_png, capsys):
    out = tmp_path / "run"
    assert _enhance(enhance_assets, out) == 0
    (out / "tb" / "my_own_plot.txt").write_text("mine")
    capsys.readouterr()
    assert _enhance(enhance_assets, out, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--overwrite: {out} holds tb/my_own_plot.txt, which no run recorded writing" in err
    assert (out / "tb" / "my_own_plot.txt").read_text() == "mine" and (out / "enhancer.safetensors").is_file()

    from enhancement.demo import main

    photos = tmp_path / "photos"
    for i in range(6):
        write_png(photos / f"{i}.png", 64, 64, seed=i)
    demo = tmp_path / "demo"
    args = ["--out", str(demo), "--steps", "1", "--checkpoint", str(tiny_checkpoint_path), "--data", str(photos),
            "--set", "data.crop_size=32", "--set", "val.crop_size=32", "--set", "data.val_images=2",
            "--set", "model.width=4", "--set", "model.depth=2", "--set", "train.batch_size=2",
            "--set", "loss.lpips_weight=0", "--set", "val.lpips=false", "--set", "train.progress=false"]
    assert main(args) == 0
    (demo / "tb" / "my_own_plot.txt").write_text("mine")
    weights = (demo / "enhancer.safetensors").read_bytes()
    with pytest.raises(SystemExit, match=rf"--overwrite: {demo} holds tb/my_own_plot.txt, which no run recorded"):
        main(args + ["--overwrite"])
    assert (demo / "tb" / "my_own_plot.txt").read_text() == "mine"
    assert (demo / "enhancer.safetensors").read_bytes() == weights


@pytest.mark.parametrize("flag, kind", [("--data", "folder"), ("--checkpoint", "file"), ("--config", "file")])
def test_demo_missing_input_is_usage_and_writes_nothing(flag, kind, tmp_path, tiny_checkpoint_path, capsys):
    # Issue 38: --data nope / --checkpoint nope exited 3 ("I/O error: data folder not found") and left
    # attiqa-run.json in --out.
    from enhancement import cli

    photos = tmp_path / "photos"
    photos.mkdir()
    values = {"--data": str(photos), "--checkpoint": str(tiny_checkpoint_path)}
    missing = tmp_path / "nope"
    values[flag] = str(missing)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--steps", "1"] + [x for k, v in values.items() for x in (k, v)]
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"attiqa-enhance demo: {flag} {missing}: no such {kind}"
    assert not out.exists()


def test_pretrain_resume_in_a_folder_of_the_users_own_config_says_there_is_no_run(photo_dir, tmp_path):
    """--resume into a folder holding the user's own config.yaml (no run record): one line
    saying there is no run to resume, not the config loader's list of unknown keys."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my: config\n")
    code, message = _pretrain(out, photo_dir, "--resume")
    assert code is None and message.startswith(f"attiqa-pretrain train: --resume: no training state at {out / 'state.pt'}")
    assert "no record of a run" in message and "unknown config key" not in message
    assert (out / "config.yaml").read_text() == "my: config\n" and sorted(p.name for p in out.iterdir()) == ["config.yaml"]
