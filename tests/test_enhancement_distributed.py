"""``attiqa-enhance train`` under ``torchrun --nproc_per_node 2`` on CPU (gloo)."""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

from enhancement_helpers import REPO, tiny_overrides, write_images, write_quality_model


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="this torch build has no gloo backend"
)
@pytest.mark.slow
def test_two_process_cpu_training(tmp_path, free_port):
    write_images(tmp_path / "clean", 6, size=(48, 56))
    quality = write_quality_model(tmp_path / "q.safetensors")
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port), "-m", "enhancement.cli", "train",
        "--config", str(REPO / "configs" / "enhance_lowlight.yaml"),
        "--data", str(tmp_path / "clean"), "--out", str(out),
        *tiny_overrides(quality, **{"train.steps": 3, "train.device": "cpu"}),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "(2 processes)" in proc.stderr
    assert (out / "enhancer.safetensors").is_file() and (out / "state.pt").is_file()
    assert json.loads((out / "metrics.json").read_text())["step"] == 3
    # Rank 0 alone writes logs: a single event file in the main run and in each sub-run.
    runs = [out / "tb", *(p for p in (out / "tb").iterdir() if p.is_dir())]
    assert len(runs) == 4  # main, input, output and reference (no axis-helper runs)
    for run in runs:
        assert len(list(run.glob("events.out.tfevents.*"))) == 1, run
