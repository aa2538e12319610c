"""CLIP teacher and the label job: formula, resume, skips, ranks, rescore (tiny random CLIP, CPU, no downloads)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attiqa_loss import ATTRIBUTES
from pretrain.clip.label import list_label_inputs
from pretrain.clip.label_job import label_files
from pretrain.clip.label_records import rescore
from pretrain.clip.label_store import read_embeddings, read_labels, shard_path
from pretrain.clip.model import create_clip_teacher
from pretrain.clip.prompts import CANDIDATE_PAIRS, Prompt, default_prompt_set, save_prompt_set
from pretrain.clip.teacher import load_clip_image, pseudo_labels

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = str(ROOT / "configs" / "open_clip_tiny.json")


@pytest.fixture(scope="module")
def teacher():
    return create_clip_teacher(TINY_CLIP, "none")


@pytest.fixture
def photos(image_folder):
    """Seven generated images of varied sizes, one in a subfolder."""
    folder = image_folder(sizes=[(64, 64), (80, 64), (64, 96), (70, 70), (90, 66), (64, 72), (100, 80)])
    sub = folder / "sub"
    sub.mkdir()
    (folder / "img_006.png").rename(sub / "img_006.png")
    return folder


def _label(files, out, teacher, **kw):
    kw.setdefault("shard_size", 3)
    kw.setdefault("batch_size", 2)
    kw.setdefault("workers", 0)
    kw.setdefault("progress", False)
    return label_files(files, out, teacher, **kw)


def test_no_network_needed(monkeypatch):
    import open_clip

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", refuse)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_hf", refuse)
    t = create_clip_teacher(TINY_CLIP, "none")
    feats = t.attribute_features(default_prompt_set())
    assert feats.shape == (5, 2, t.embed_dim)
    assert torch.allclose(feats.norm(dim=-1), torch.ones(5, 2), atol=1e-5)


def test_a_model_config_file_leaves_open_clips_registry_as_it_was(tmp_path):
    import open_clip
    from open_clip import factory

    registry, names = factory._MODEL_CONFIGS, open_clip.list_models()
    t = create_clip_teacher(TINY_CLIP, "none")
    assert t.model.visual.image_size == (64, 64) and t.tokenizer.context_length == 32  # the file's config was used
    assert open_clip.list_models() == names and "open_clip_tiny" not in names
    assert open_clip.get_model_config("open_clip_tiny") is None
    assert factory._MODEL_CONFIGS is registry
    # also when building fails half-way (the config is looked up, the model cannot be built)
    bad = json.loads(Path(TINY_CLIP).read_text())
    bad["vision_cfg"]["width"] = "wide"
    (tmp_path / "broken_tiny.json").write_text(json.dumps(bad))
    with pytest.raises(TypeError):  # open_clip's CLIP(...) on a width that is not a number
        create_clip_teacher(str(tmp_path / "broken_tiny.json"), "none")
    assert open_clip.list_models() == names and factory._MODEL_CONFIGS is registry


def test_unknown_model_and_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip model 'NotAModel'"):
        create_clip_teacher("NotAModel", "none")
    with pytest.raises(ValueError, match="'nope' is neither a pretrained tag of 'RN50'"):
        create_clip_teacher("RN50", "nope")
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ValueError, match=r"not an open_clip model config: missing key\(s\) \['vision_cfg', 'text_cfg'\]"):
        create_clip_teacher(str(bad), "none")
    with pytest.raises(FileNotFoundError, match="open_clip model config not found"):
        create_clip_teacher(str(tmp_path / "missing.json"), "none")


def test_the_tiny_model_config_named_in_the_help_works_from_any_folder(tmp_path, monkeypatch):
    # --clip-model's help names configs/open_clip_tiny.json; outside a clone that is the shipped file (#37).
    from pretrain.clip.model import resolve_clip_model

    monkeypatch.chdir(tmp_path)
    for name in ("configs/open_clip_tiny.json", "open_clip_tiny.json"):
        assert resolve_clip_model(name) == ("open_clip_tiny", json.loads(Path(TINY_CLIP).read_text()))
    with pytest.raises(FileNotFoundError, match="open_clip model config not found: configs/no_such.json"):
        resolve_clip_model("configs/no_such.json")


def test_random_weights_are_reproducible_and_tau_is_the_logit_scale(teacher):
    again = create_clip_teacher(TINY_CLIP, "none")
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(teacher.encode_images(x), again.encode_images(x))
    assert teacher.tau == pytest.approx(float(teacher.model.logit_scale.exp()))
    assert teacher.tau == pytest.approx(1 / 0.07, rel=1e-5)  # open_clip's initial logit scale
    assert create_clip_teacher(TINY_CLIP, "none", tau=100.0).tau == 100.0


def test_pseudo_label_formula_and_pair_swap_symmetry(teacher):
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    f = teacher.encode_images(x)
    prompts = default_prompt_set()
    swapped = {a: tuple(p.swapped() for p in ps) for a, ps in prompts.items()}
    p = pseudo_labels(f, teacher.attribute_features(prompts), teacher.tau)
    q = pseudo_labels(f, teacher.attribute_features(swapped), teacher.tau)
    assert p.shape == (4, 5) and p.dtype == torch.float32
    assert ((p > 0) & (p < 1)).all()
    assert torch.allclose(q, 1 - p, atol=1e-6, rtol=0)
    # the formula written out for one attribute: softmax(tau * [cos+, cos-])[0]
    poles = teacher.attribute_features(prompts)[0]
    cos = f @ poles.T
    assert torch.allclose(p[:, 0], torch.softmax(teacher.tau * cos, dim=1)[:, 0], atol=1e-6)


def test_prompt_ensemble_is_mean_of_normalised_features(teacher):
    ps = [Prompt("sharp", "blurry", "a {} photo."), Prompt("crisp", "fuzzy", "this image is {}.")]
    pos = teacher.encode_text([p.texts()[0] for p in ps])
    expected = torch.nn.functional.normalize(pos.mean(0), dim=0)
    assert torch.allclose(teacher.prompt_features([ps])[0, 0], expected, atol=1e-6)


def test_preprocessing_matches_open_clip_eval_transform(teacher, write_png, tmp_path):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    # What open_clip.create_model_and_transforms gives as its evaluation transform.
    preprocess = image_transform_v2(PreprocessCfg(**teacher.model.visual.preprocess_cfg), is_train=False)
    for i, (h, w) in enumerate([(48, 80), (90, 50), (64, 64)]):
        path = write_png(tmp_path / f"pp_{i}.png", h, w, seed=i)
        ours = teacher.normalize(load_clip_image(path, teacher.image_size)[None])[0]
        theirs = preprocess(Image.open(path))
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_label_writes_shards_and_manifest(teacher, photos, tmp_path):
    files = list_label_inputs(photos)
    assert files == sorted(files) and len(files) == 7 and all(p.is_absolute() for p in files)
    manifest = _label(files, tmp_path / "run", teacher)
    assert sorted(p.name for p in (tmp_path / "run").glob("shard-*.safetensors")) == [
        "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    paths, labels = read_labels(tmp_path / "run")
    epaths, emb = read_embeddings(tmp_path / "run")
    assert paths == epaths == [str(f) for f in files]
    assert labels.shape == (7, 5) and labels.dtype == torch.float32
    assert emb.shape == (7, teacher.embed_dim) and emb.dtype == torch.float16
    assert torch.allclose(emb.float().norm(dim=1), torch.ones(7), atol=2e-3)
    # same numbers as encoding the images directly (labels come from the fp16 features)
    direct = teacher.encode_images(torch.stack([load_clip_image(f, teacher.image_size) for f in files])).half()
    assert torch.allclose(emb.float(), direct.float(), atol=1e-3)
    assert torch.allclose(labels, pseudo_labels(emb.float(), teacher.attribute_features(default_prompt_set()), teacher.tau), atol=1e-6)
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["counts"] == {"files": 7, "labelled": 7, "skipped": 0}
    assert manifest["attributes"] == list(ATTRIBUTES)
    assert manifest["tau"] == pytest.approx(teacher.tau)
    assert manifest["run"]["images_per_s"] > 0


def test_resume_after_kill_redoes_nothing_and_matches(teacher, photos, tmp_path):
    files = list_label_inputs(photos)
    _label(files, tmp_path / "full", teacher)

    class Killed(Exception):
        pass

    def die_after_first(index, path):
        raise Killed(f"simulated kill after shard {index}")

    with pytest.raises(Killed):
        _label(files, tmp_path / "resumed", teacher, on_shard_written=die_after_first)
    first = shard_path(tmp_path / "resumed", 0)
    assert first.is_file() and not shard_path(tmp_path / "resumed", 1).exists()
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match=r"incomplete: 2 shard\(s\) missing"):
        read_labels(tmp_path / "resumed")
    before = first.stat().st_mtime_ns
    written = []
    manifest = _label(files, tmp_path / "resumed", teacher, on_shard_written=lambda k, p: written.append(k))
    assert written == [1, 2]
    assert first.stat().st_mtime_ns == before
    assert manifest["run"]["shards_already_done"] == 1 and manifest["run"]["images_this_run"] == 4
    a_paths, a_labels = read_labels(tmp_path / "full")
    b_paths, b_labels = read_labels(tmp_path / "resumed")
    assert a_paths == b_paths
    assert torch.equal(a_labels, b_labels)
    assert torch.equal(read_embeddings(tmp_path / "full")[1], read_embeddings(tmp_path / "resumed")[1])


def test_resume_into_a_different_plan_is_refused(teacher, photos, tmp_path):
    files = list_label_inputs(photos)
    _label(files, tmp_path / "run", teacher)
    with pytest.raises(ValueError, match=r"holds a labelling run with different \['num_shards', 'shard_size'\]"):
        _label(files, tmp_path / "run", teacher, shard_size=4)


def test_unreadable_images_are_skipped_and_listed(teacher, photos, tmp_path):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (photos / "empty.jpg").write_bytes(b"")
    files = list_label_inputs(photos)
    manifest = _label(files, tmp_path / "run", teacher, workers=2)
    assert manifest["counts"] == {"files": 9, "labelled": 7, "skipped": 2}
    assert manifest["skipped_count"] == 2
    assert sorted(Path(s["path"]).name for s in manifest["skipped"]) == ["broken.png", "empty.jpg"]
    assert all(s["error"] for s in manifest["skipped"])
    paths, labels = read_labels(tmp_path / "run")
    assert len(paths) == 7 and labels.shape == (7, 5)
    assert not any(p.endswith(("broken.png", "empty.jpg")) for p in paths)


def test_file_list_relative_paths_and_missing_entries(teacher, photos, tmp_path):
    lst = photos / "list.txt"
    lst.write_text("# two files and a stale entry\nimg_000.png\n\nsub/img_006.png\ngone.png\n")
    files = list_label_inputs(file_list=lst)
    assert [f.name for f in files] == ["gone.png", "img_000.png", "img_006.png"]
    manifest = _label(files, tmp_path / "run", teacher)
    assert manifest["counts"]["labelled"] == 2
    assert manifest["skipped"][0]["path"].endswith("gone.png")
    assert "FileNotFoundError" in manifest["skipped"][0]["error"]
    with pytest.raises(ValueError, match="nothing to label"):
        list_label_inputs()


def test_rescore_equals_a_fresh_label_run(teacher, photos, tmp_path):
    files = list_label_inputs(photos)
    _label(files, tmp_path / "run", teacher)
    other = {a: (Prompt(*CANDIDATE_PAIRS[a][2], "this image is {}."), Prompt(*CANDIDATE_PAIRS[a][1], "a {} photo."))
             for a in ATTRIBUTES}
    yaml_path = save_prompt_set(tmp_path / "other.yaml", other)
    paths, labels = rescore(tmp_path / "run", yaml_path, TINY_CLIP, "none", dest=tmp_path / "rescored")
    _label(files, tmp_path / "fresh", teacher, prompt_set=other)
    f_paths, f_labels = read_labels(tmp_path / "fresh")
    assert paths == f_paths
    assert torch.allclose(labels, f_labels, atol=1e-6, rtol=0)
    assert not torch.allclose(labels, read_labels(tmp_path / "run")[1], atol=1e-3)  # the prompts mattered
    d_paths, d_labels = read_labels(tmp_path / "rescored")
    assert d_paths == paths and torch.equal(d_labels, labels)
    assert torch.equal(read_embeddings(tmp_path / "rescored")[1], read_embeddings(tmp_path / "run")[1])
    with pytest.raises(ValueError, match="text features of another model do not match"):
        rescore(tmp_path / "run", yaml_path, TINY_CLIP, "none", init_seed=1)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(teacher, photos, tmp_path, free_port):
    args = ["label", "--images", str(photos), "--clip-model", TINY_CLIP, "--clip-pretrained", "none",
            "--workers", "0", "--set", "label.shard_size=2", "--set", "label.batch_size=2", "--set", "label.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port), "-m", "pretrain.cli", *args, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from pretrain.cli import main

    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = read_labels(tmp_path / "two"), read_labels(tmp_path / "one")
    assert two[0] == one[0] and len(one[0]) == 7
    assert torch.allclose(two[1], one[1], atol=1e-6, rtol=0)
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["run"]["world_size"] == 2 and manifest["num_shards"] == 4
    assert manifest["counts"]["labelled"] == 7


def test_real_photos_label_and_jpeg_draft(shared_data, teacher, tmp_path):
    set14 = sorted((shared_data / "pristine" / "set14").glob("*.png"))[:3]
    urban = sorted((shared_data / "pristine" / "urban100").glob("*.jpg"))[:2]
    if len(set14) < 3 or len(urban) < 2:
        pytest.skip("shared data lacks set14 PNGs or urban100 JPEGs")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(str(p) for p in set14 + urban))
    manifest = _label(list_label_inputs(file_list=lst), tmp_path / "run", teacher)
    assert manifest["counts"] == {"files": 5, "labelled": 5, "skipped": 0}
    # reduced-scale JPEG decoding stays close to a full decode at CLIP size
    size = (224, 224)
    fast = load_clip_image(urban[0], size, draft=True).float() / 255
    full = load_clip_image(urban[0], size, draft=False).float() / 255
    assert (fast - full).abs().mean() < 0.02
