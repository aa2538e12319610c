"""Prompt candidates, the prompt-set file format, and select-prompts (tiny random CLIP, no downloads)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from attiqa_loss import ATTRIBUTES, DEFAULT_TEMPLATES
from pretrain.cli import main as pretrain_main
from pretrain.clip.prompt_proxy import score_prompts
from pretrain.clip.prompts import (
    CANDIDATE_PAIRS,
    CANDIDATE_TEMPLATES,
    Prompt,
    default_prompt_set,
    list_candidates,
    load_candidates,
    load_prompt_set,
    save_prompt_set,
)
from pretrain.clip.select_prompts import pick_images
from pretrain.metrics.correlation import batched_srcc

TINY_CLIP = str(Path(__file__).resolve().parents[1] / "configs" / "open_clip_tiny.json")


def test_prompt_rejects_bad_templates_and_pairs():
    with pytest.raises(ValueError, match=r"must contain '\{\}' exactly once, got 'a photo\.'"):
        Prompt("sharp", "blurry", "a photo.")
    with pytest.raises(ValueError, match="two different words, got 'sharp' twice"):
        Prompt("sharp", "sharp", "a {} photo.")
    assert Prompt("sharp", "blurry", "a {} photo.").texts() == ("a sharp photo.", "a blurry photo.")
    assert Prompt("sharp", "blurry", "a {} photo.").swapped() == Prompt("blurry", "sharp", "a {} photo.")


def test_candidates_start_with_the_library_default_and_cover_all_templates():
    for a in ATTRIBUTES:
        assert CANDIDATE_PAIRS[a][0] == ATTRIBUTES.prompts[a]
        assert len(CANDIDATE_PAIRS[a]) >= 4
        cands = list_candidates(a)
        assert len(cands) == len(CANDIDATE_PAIRS[a]) * len(CANDIDATE_TEMPLATES)
        assert len(set(cands)) == len(cands)
    assert set(DEFAULT_TEMPLATES) <= set(CANDIDATE_TEMPLATES)
    with pytest.raises(ValueError, match="unknown attribute 'sharpnes'"):
        list_candidates("sharpnes")


def test_prompt_set_round_trip(tmp_path):
    chosen = {a: (Prompt(*CANDIDATE_PAIRS[a][1], "this image is {}."),) for a in ATTRIBUTES}
    path = save_prompt_set(tmp_path / "p.yaml", chosen, scores={a: [0.5] for a in ATTRIBUTES},
                           ensemble_scores={a: 0.5 for a in ATTRIBUTES}, selection={"note": "test"})
    assert load_prompt_set(path) == chosen
    assert load_prompt_set(save_prompt_set(tmp_path / "d.yaml", default_prompt_set())) == default_prompt_set()


def test_prompt_set_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"format": "something-else"}))
    with pytest.raises(ValueError, match="is not an attiqa-prompts file \\(format='something-else'\\)"):
        load_prompt_set(bad)
    doc = yaml.safe_load((save_prompt_set(tmp_path / "ok.yaml", default_prompt_set())).read_text())
    del doc["attributes"]["noisiness"]
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"missing \['noisiness'\]"):
        load_prompt_set(bad)
    doc = yaml.safe_load((tmp_path / "ok.yaml").read_text())
    doc["attributes"]["contrast"]["prompts"][0]["template"] = "no placeholder"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"contrast\.prompts\[0\]: a prompt template must contain"):
        load_prompt_set(bad)
    with pytest.raises(FileNotFoundError, match="prompt file not found"):
        load_prompt_set(tmp_path / "nope.yaml")


def test_custom_candidates_file(tmp_path):
    path = tmp_path / "cands.yaml"
    path.write_text(yaml.safe_dump({"templates": ["a {} photo."], "pairs": {"sharpness": [["sharp", "blurry"], ["crisp", "soft"]]}}))
    cands = load_candidates(path)
    assert [p.positive for p in cands["sharpness"]] == ["sharp", "crisp"]
    assert len(cands["contrast"]) == len(CANDIDATE_PAIRS["contrast"])
    path.write_text(yaml.safe_dump({"pairs": {"blur": [["a", "b"]]}}))
    with pytest.raises(ValueError, match=r"unknown attribute\(s\) \['blur'\]"):
        load_candidates(path)


def test_batched_srcc_known_values():
    levels = -torch.arange(5.0)
    rows = torch.tensor([[5.0, 4, 3, 2, 1], [1, 2, 3, 4, 5], [2, 2, 2, 2, 2], [5, 4, 4, 2, 1]])
    out = batched_srcc(rows, levels)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(-1.0)
    assert out[2] == 0.0  # no ranking at all: uninformative, not NaN
    from scipy.stats import spearmanr

    assert out[3] == pytest.approx(spearmanr(rows[3].numpy(), levels.numpy())[0])


def test_batched_spearman_matches_the_numpy_srcc_with_ties_and_is_nan_when_constant():
    from pretrain.metrics.correlation import batched_spearman, srcc

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (6, 7), generator=g).double()  # many ties
    b = torch.randn(6, 7, generator=g).double()
    out = batched_spearman(a, b)
    for i in range(6):
        assert float(out[i]) == pytest.approx(srcc(a[i].numpy(), b[i].numpy()))
    assert torch.isnan(batched_spearman(torch.ones(7), b[0]))


def test_score_prompts_direction():
    # Features that move from the positive towards the negative text direction as the level grows.
    d = 8
    pos, neg = torch.eye(d)[0], torch.eye(d)[1]
    steps = torch.linspace(0, 1, 4)
    feats = torch.nn.functional.normalize((1 - steps)[:, None] * pos + steps[:, None] * neg + 0.3 * torch.eye(d)[2], dim=-1)
    feats = feats.expand(3, 4, d)  # 3 images, 4 levels
    poles = torch.stack([torch.stack([pos, neg]), torch.stack([neg, pos])])  # right way round, swapped
    scores = score_prompts({"fam": feats}, poles)["fam"]
    assert torch.allclose(scores[0], torch.ones(3, dtype=scores.dtype))
    assert torch.allclose(scores[1], -torch.ones(3, dtype=scores.dtype))


def test_pick_images_spreads_over_the_list(image_folder):
    folder = image_folder(sizes=[(40, 40)] * 10)
    picked = pick_images(str(folder), 4)
    names = [p.name for p in picked]
    assert names == ["img_000.png", "img_002.png", "img_005.png", "img_007.png"]


def test_select_prompts_cli_writes_yaml_and_csv(image_folder, tmp_path, capsys):
    folder = image_folder(sizes=[(72, 64), (64, 80), (70, 70), (64, 64)])
    (folder / "zz_broken.png").write_bytes(b"not an image")
    cands = tmp_path / "cands.yaml"
    cands.write_text(yaml.safe_dump({
        "templates": ["a {} photo.", "this image is {}."],
        "pairs": {a: [list(p) for p in CANDIDATE_PAIRS[a][:2]] for a in ATTRIBUTES},
    }))
    out = tmp_path / "sel"
    rc = pretrain_main([
        "select-prompts", "--images", str(folder), "--out", str(out), "--clip-model", TINY_CLIP,
        "--clip-pretrained", "none", "--set", "proxy.levels=3", "--set", "select.top_k=2",
        "--set", f"select.candidates={cands}", "--set", "proxy.batch_size=4",
    ])
    assert rc == 0
    with open(out / "proxy_scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    chosen = load_prompt_set(out / "prompts.yaml")
    for a in ATTRIBUTES:
        cand_rows = [r for r in rows if r["attribute"] == a and r["kind"] == "candidate"]
        assert len(cand_rows) == 4  # every candidate (2 pairs x 2 templates) scored
        scores = [float(r["srcc"]) for r in cand_rows]
        assert scores == sorted(scores, reverse=True)
        assert [int(r["rank"]) for r in cand_rows] == [1, 2, 3, 4]
        best = cand_rows[0]
        assert chosen[a][0] == Prompt(best["positive"], best["negative"], best["template"])
        assert len(chosen[a]) == 2 and sum(int(r["selected"]) for r in cand_rows) == 2
        assert {r["kind"] for r in rows if r["attribute"] == a} == {"candidate", "selected_top2", "library_default"}
        assert all(-1.0 <= s <= 1.0 for s in scores)
        fams = cand_rows[0]["family_srcc"].split(";")
        from pretrain.degrade.families import list_families

        assert [f.split("=")[0] for f in fams] == [f.name for f in list_families(a)]
    doc = yaml.safe_load((out / "prompts.yaml").read_text())
    assert "random CLIP weights" in doc["selection"]["warning"]
    assert doc["selection"]["n_images"] == 4
    err = capsys.readouterr().err
    assert "skipping unreadable" in err and "zz_broken.png" in err


def test_select_prompts_needs_images(tmp_path):
    with pytest.raises(SystemExit, match="give --images DIR"):
        pretrain_main(["select-prompts", "--out", str(tmp_path / "o"), "--clip-model", TINY_CLIP, "--clip-pretrained", "none"])
