"""TensorBoard output read back with TensorBoard's own reader: ``attiqa-score --logdir``, and
the enhancement run layout (one sub-run per role, the same attribute tags as scoring, no
helper runs, labelled image strips, the trimmed HParams session, rank > 0 silent, resume purging every sub-run)."""

import csv
import io
import time
from contextlib import redirect_stdout

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginEventAccumulator
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.hparams import metrics as hp_metrics
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from attiqa_loss import ATTRIBUTES
from attiqa_loss.cli import main as score_main
from enhancement.config import EnhanceConfig
from enhancement.tensorboard_utils import (
    HPARAMS_SHOWN,
    ROLES,
    EnhanceLogger,
    attribute_tag,
    header_height,
    hparams_of,
    labelled_strip,
)

from enhancement_helpers import write_images, write_quality_model


def _value(event):
    return float(tensor_util.make_ndarray(event.tensor_proto))


def _reader(path):
    acc = EventAccumulator(str(path), size_guidance={"tensors": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


def _score_logdir(tmp_path, folders, extra=()):
    """``attiqa-score FOLDERS --format csv --logdir tmp_path/tb``: (csv rows, logdir)."""
    quality = write_quality_model(tmp_path / "q.safetensors")
    logdir = tmp_path / "tb"
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = score_main([*map(str, folders), "--checkpoint", str(quality), "--format", "csv",
                           "--logdir", str(logdir), "--no-progress", *extra])
    assert code == 0
    return list(csv.DictReader(io.StringIO(buf.getvalue()))), logdir


def _runs(logdir):
    """The TensorBoard runs under ``logdir`` (sub-folders), the logdir's own run left out."""
    return sorted(str(p.relative_to(logdir)) for p in logdir.rglob("*") if p.is_dir())


def test_attiqa_score_logdir_writes_per_folder_means(tmp_path):
    write_images(tmp_path / "sunny", 3, size=(40, 48), seed=0)
    write_images(tmp_path / "dark", 2, size=(40, 48), seed=10)
    rows, logdir = _score_logdir(tmp_path, [tmp_path / "sunny", tmp_path / "dark"])
    assert len(rows) == 5
    for folder, count in (("sunny", 3), ("dark", 2)):
        acc = _reader(logdir / folder)
        mine = [r for r in rows if f"/{folder}/" in r["path"]]
        assert len(mine) == count
        for name in ATTRIBUTES:
            # The mean at steps 0 and 1: a short flat line, not a dot; the training runs' tag.
            expected = pytest.approx(sum(float(r[name]) for r in mine) / count, abs=1e-5)
            assert _steps_values(acc, f"attributes/{name}") == [(0, expected), (1, expected)]
            desc = acc.SummaryMetadata(f"attributes/{name}").summary_description
            assert desc.startswith(f"{name} (") and "quality-aligned" in desc and "1 = desirable" in desc
            assert f"scores/{name}" in acc.Tags()["histograms"]
            assert acc.Histograms(f"scores/{name}")[0].histogram_value.num == count
        overall = pytest.approx(sum(float(r[n]) for r in mine for n in ATTRIBUTES) / (count * len(ATTRIBUTES)),
                                abs=1e-5)
        assert _steps_values(acc, "attributes/all") == [(0, overall), (1, overall)]
        assert "1 = desirable" in acc.SummaryMetadata("attributes/all").summary_description
        assert not any(t.startswith("mean/") for t in acc.Tags()["tensors"])  # the former tags are gone
    # No helper run: every run is a folder, so every line in a chart is data.
    assert _runs(logdir) == ["dark", "sunny"]


def test_attiqa_score_logdir_difference_chart_is_each_folder_minus_the_first(tmp_path):
    """``attiqa-score before/ after/ other/ --logdir``: ``difference/<name>`` in the later
    folders' runs = the mean of the per-image differences over the images paired by name
    (the csv's ``<name>_diff``), at steps 0 and 1; none in the first folder's run."""
    write_images(tmp_path / "before", 3, size=(40, 48), seed=0)
    write_images(tmp_path / "after", 3, size=(40, 48), seed=20)
    write_images(tmp_path / "other", 2, size=(40, 48), seed=40)  # img00, img01: paired with those of the others
    rows, logdir = _score_logdir(tmp_path, [tmp_path / "before", tmp_path / "after", tmp_path / "other"])
    assert _runs(logdir) == ["after", "before", "other"]
    before = {r["name"]: r for r in rows if "/before/" in r["path"]}
    for folder in ("after", "other"):
        acc = _reader(logdir / folder)
        mine = [r for r in rows if f"/{folder}/" in r["path"] and r["name"] in ("img00.png", "img01.png")]
        assert len(mine) == 2
        for name in ATTRIBUTES:
            expected = sum(float(r[name]) - float(before[r["name"]][name]) for r in mine) / 2
            assert expected == pytest.approx(sum(float(r[f"{name}_diff"]) for r in mine) / 2, abs=1e-5)
            assert _steps_values(acc, f"difference/{name}") == [(0, pytest.approx(expected, abs=1e-5)),
                                                                (1, pytest.approx(expected, abs=1e-5))]
            desc = acc.SummaryMetadata(f"difference/{name}").summary_description
            assert "minus before's" in desc and "paired by relative path" in desc
    assert not any(t.startswith("difference/") for t in _reader(logdir / "before").Tags()["tensors"])


def test_attiqa_score_logdir_difference_of_unpaired_folders_is_that_of_the_means(tmp_path):
    write_images(tmp_path / "before", 2, size=(40, 48), seed=0)
    write_images(tmp_path / "after", 3, size=(40, 48), seed=20, suffix=".jpg")  # no name in common
    rows, logdir = _score_logdir(tmp_path, [tmp_path / "before", tmp_path / "after"])
    acc = _reader(logdir / "after")
    for name in ATTRIBUTES:
        means = {f: sum(float(r[name]) for r in rows if f"/{f}/" in r["path"]) / n for f, n in (("before", 2),
                                                                                                  ("after", 3))}
        expected = pytest.approx(means["after"] - means["before"], abs=1e-5)
        assert _steps_values(acc, f"difference/{name}") == [(0, expected), (1, expected)]
    assert "difference of the folder means" in acc.SummaryMetadata("difference/sharpness").summary_description


def _text(acc, tag):
    return tensor_util.make_ndarray(acc.Tensors(tag)[0].tensor_proto).item().decode()


def test_attiqa_score_logdir_tables_of_means_and_differences_are_text(tmp_path):
    write_images(tmp_path / "before", 2, size=(40, 48), seed=0)
    write_images(tmp_path / "after", 2, size=(40, 48), seed=20)
    rows, logdir = _score_logdir(tmp_path, [tmp_path / "before", tmp_path / "after"])
    root = _reader(logdir)  # the logdir's own run (".") holds the tables and nothing to chart
    assert set(root.Tags()["tensors"]) == {"tables/means/text_summary", "tables/difference/text_summary"}
    means = _text(root, "tables/means/text_summary").splitlines()
    header = next(line for line in means if line.startswith("| folder"))
    assert header == "| folder | images | " + " | ".join(ATTRIBUTES) + " | all |"
    for folder in ("before", "after"):
        line = next(line for line in means if line.startswith(f"| {folder} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        mine = [r for r in rows if f"/{folder}/" in r["path"]]
        assert cells[1] == "2"
        assert [float(c) for c in cells[2:7]] == [pytest.approx(sum(float(r[n]) for r in mine) / 2, abs=1e-3)
                                                  for n in ATTRIBUTES]
    diff = _text(root, "tables/difference/text_summary")
    assert "Difference to before" in diff
    line = next(line for line in diff.splitlines() if line.startswith("| after |"))
    chart = _reader(logdir / "after")
    assert [float(c) for c in line.strip("|").split("|")[1:]] == [
        pytest.approx(_steps_values(chart, f"difference/{n}")[0][1], abs=1e-3) for n in ATTRIBUTES]
    # One folder: its means table, no difference (chart or table), no other run.
    single = tmp_path / "single"
    single.mkdir()
    _, logdir = _score_logdir(single, [tmp_path / "before"])
    assert _runs(logdir) == ["before"]
    assert set(_reader(logdir).Tags()["tensors"]) == {"tables/means/text_summary"}
    assert not any(t.startswith("difference/") for t in _reader(logdir / "before").Tags()["tensors"])


def test_scoring_and_training_log_attributes_under_one_tag_scheme_without_helper_runs(tmp_path):
    """``attiqa-score --logdir`` and a training run's logger write the same
    ``attributes/<name>`` tags (one chart per attribute in a logdir that holds both), and
    neither writes a run that is not data."""
    write_images(tmp_path / "photos", 2, size=(40, 48), seed=0)
    _, logdir = _score_logdir(tmp_path, [tmp_path / "photos"])
    scored = {t for t in _reader(logdir / "photos").Tags()["tensors"] if t != "attributes/all"}
    log = EnhanceLogger(tmp_path / "train")
    assert log.runs == ["output", "input", "reference", ""]
    log.attribute_scores({role: {a: 0.5 for a in ATTRIBUTES} for role in ROLES}, step=1)
    log.close()
    trained = set(_reader(tmp_path / "train" / "output").Tags()["tensors"])
    assert scored == trained == {attribute_tag(a) for a in ATTRIBUTES} == {f"attributes/{a}" for a in ATTRIBUTES}
    assert _runs(tmp_path / "train") == sorted(ROLES)
    assert _runs(logdir) == ["photos"]


def _plugin_reader(path):
    """The reader behind ``tensorboard --load_fast=false``: unlike :func:`_reader`'s, it
    purges new-style (tensor) scalars on a session restart."""
    acc = PluginEventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _steps_values(acc, tag):
    return [(e.step, _value(e)) for e in acc.Tensors(tag)]


def _all_tags(acc):
    tags = acc.Tags()
    return set(tags["tensors"]) | set(tags["scalars"]) | set(tags["images"])


SCORES = {
    "input": {"brightness": 0.2, "noisiness": 0.6},
    "output": {"brightness": 0.7, "noisiness": 0.8},
    "reference": {"brightness": 0.8, "noisiness": 0.9},
}


def test_each_role_is_a_sub_run_with_one_tag_per_attribute(tmp_path):
    # The clean image is the "reference" (AttiqaLoss's "targets" are score levels).
    assert ROLES == ("input", "output", "reference")
    log = EnhanceLogger(tmp_path)
    assert log.runs == ["output", "input", "reference", ""]
    log.attribute_scores(SCORES, step=5)
    log.attribute_scores(SCORES, step=10)
    log.validation_metrics({"psnr": 20.0, "ssim": 0.7, "psnr_input": 9.0, "ssim_input": 0.3}, step=10)
    log.close()
    assert not _all_tags(_reader(tmp_path))  # the main run holds no validation numbers
    for role in ROLES:
        acc = _reader(tmp_path / role)
        for name in ("brightness", "noisiness"):
            tag = attribute_tag(name)
            value = pytest.approx(SCORES[role][name])
            assert _steps_values(acc, tag) == [(5, value), (10, value)]
            desc = acc.SummaryMetadata(tag).summary_description
            assert "quality-aligned" in desc and "1 = desirable" in desc
        assert not any(t.endswith(("/input", "/output", "/reference")) for t in _all_tags(acc))
    assert "1 = well lit, 0 = dark" in _reader(tmp_path / "output").SummaryMetadata("attributes/brightness") \
        .summary_description
    assert _runs(tmp_path) == sorted(ROLES)  # no constant 0 and 1 runs that would read as data
    # Fidelity metrics: the same tag in the output and input runs.
    inp, out, reference = (_reader(tmp_path / r) for r in ROLES)
    assert _steps_values(out, "val/psnr") == [(10, 20.0)] and _steps_values(inp, "val/psnr") == [(10, 9.0)]
    assert _steps_values(inp, "val/ssim") == [(10, pytest.approx(0.3))]
    assert "val/psnr" not in _all_tags(reference)
    assert not any(t.endswith("_input") for t in _all_tags(inp) | _all_tags(out))


def test_unknown_role_is_refused_and_roles_limit_the_sub_runs(tmp_path):
    log = EnhanceLogger(tmp_path / "unpaired", roles=("input", "output"))
    assert "reference" not in log.runs
    with pytest.raises(ValueError, match="role must be one of"):
        log.attribute_scores({"target": {"brightness": 0.5}}, 0)
    log.close()
    assert not (tmp_path / "unpaired" / "reference").exists()
    bare = EnhanceLogger(tmp_path / "noval", roles=())
    assert bare.runs == [""]
    bare.close()


def test_labelled_strip_has_a_header_band_naming_each_panel():
    images = [torch.full((3, 40, 56), v) for v in (0.2, 0.5, 0.9)]
    strip = labelled_strip(images)
    band = header_height(56)
    assert strip.dtype == torch.uint8 and tuple(strip.shape) == (3, 40 + band, 3 * 56)
    assert band >= 16
    for i, v in enumerate((0.2, 0.5, 0.9)):
        panel = strip[:, band:, i * 56:(i + 1) * 56]
        assert (panel == round(v * 255)).all()  # the photo itself is untouched
        head = strip[:, :band, i * 56 + 2:(i + 1) * 56 - 2]
        assert head.float().mean() < 100 and head.max() > 200  # light text on a dark band
    # Two panels (unpaired: no reference), tiny and large panels keep the text inside the band.
    assert tuple(labelled_strip(images[:2], ROLES[:2]).shape) == (3, 40 + band, 2 * 56)
    assert header_height(32) == 16 and header_height(2000) == 96
    tiny = labelled_strip([torch.zeros(3, 32, 32)] * 3)
    assert tuple(tiny.shape) == (3, 48, 96) and (tiny[:, 16:] == 0).all()


def test_image_strip_is_logged_with_its_band(tmp_path):
    log = EnhanceLogger(tmp_path)
    log.image_strip("samples/coffee", [torch.rand(3, 40, 48)] * 3, step=3)
    log.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    (image,) = acc.Images("samples/coffee")
    assert (image.width, image.height, image.step) == (3 * 48, 40 + header_height(48), 3)


def test_hparams_session_is_trimmed_and_its_metrics_point_at_logged_tags(tmp_path):
    cfg = EnhanceConfig()
    weights = {a: 1.0 for a in ATTRIBUTES} | {"brightness": 2.0}
    targets = {a: 1.0 for a in ATTRIBUTES} | {"brightness": 0.8}
    hparams = hparams_of(cfg, weights, targets)
    expected = {
        "data.mode", "data.crop_size", "model.width", "train.lr", "train.steps", "train.batch_size", "train.seed",
        "loss.attiqa_views", "data.unpaired_batch", "model.output", "model.gain_residual", "model.gain_residual_highpass",
        *(f"loss.{t}_weight" for t in ("fidelity", "ssim", "lpips", "attiqa", "exposure", "tv")),
        *(f"loss.attiqa_weights.{a}" for a in ATTRIBUTES), *(f"loss.attiqa_targets.{a}" for a in ATTRIBUTES),
    }
    assert set(hparams) == expected and len(expected) == 18 + 2 * len(ATTRIBUTES)
    assert set(HPARAMS_SHOWN) <= expected

    log = EnhanceLogger(tmp_path)
    log.validation_metrics({"psnr": 21.0, "ssim": 0.8}, step=7)
    log.attribute_scores(SCORES, step=7)
    log.hparams(hparams, {"PSNR": "val/psnr", "SSIM": "val/ssim", "brightness": "attributes/brightness"}, step=7)
    log.close()
    runs = {run: _reader(tmp_path / run) for run in ("", *ROLES)}
    for acc in runs.values():
        assert not any(t.startswith("hparams/") for t in _all_tags(acc))
    with pytest.raises(KeyError):  # the session lives in the output run, not in the main one
        runs[""].PluginTagToContent("hparams")
    content = runs["output"].PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content[hp_metadata.EXPERIMENT_TAG]).experiment
    infos = {h.name: h for h in experiment.hparam_infos}
    assert set(infos) == expected
    assert {n for n, h in infos.items() if h.differs} == set(HPARAMS_SHOWN)
    assert [v.string_value for v in infos["data.mode"].domain_discrete.values] == ["paired", "synthetic", "unpaired"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content[hp_metadata.SESSION_START_INFO_TAG])
    values = start.session_start_info.hparams
    assert values["loss.attiqa_weights.brightness"].number_value == 2.0
    assert values["loss.attiqa_targets.brightness"].number_value == pytest.approx(0.8)
    assert values["data.mode"].string_value == "synthetic"
    # The plugin reads a metric from run "<session run>/<group>": the session run is "output".
    assert [m.display_name for m in experiment.metric_infos] == ["PSNR", "SSIM", "brightness"]
    found = {}
    for info in experiment.metric_infos:
        run, tag = hp_metrics.run_tag_from_session_and_metric("output", info.name)
        found[info.display_name] = _value(runs[run].Tensors(tag)[-1])
    assert found == {"PSNR": 21.0, "SSIM": pytest.approx(0.8), "brightness": pytest.approx(0.7)}


def test_disabled_logger_writes_nothing(tmp_path):
    log = EnhanceLogger(tmp_path / "tb", enabled=False)
    log.scalar("loss/total", 1.0, 0)
    log.attribute_scores(SCORES, 0)
    log.validation_metrics({"psnr": 20.0, "psnr_input": 9.0}, 0)
    log.image_strip("samples/x", [torch.rand(3, 32, 32)] * 3, 0)
    log.text("config", "a: 1")
    log.hparams({"train.lr": 0.1}, {"PSNR": "val/psnr"}, 0)
    log.flush()
    log.close()
    assert not log.runs and log.writer is None
    assert not (tmp_path / "tb").exists()


def test_resume_purges_what_came_after_the_purge_step_in_every_run(tmp_path):
    first = EnhanceLogger(tmp_path)
    for step in (1, 2, 3, 4):
        first.scalar("loss/total", 10.0 + step, step)
        first.attribute_scores(SCORES, step)
        first.validation_metrics({"psnr": 10.0 + step, "psnr_input": 5.0}, step)
    first.close()
    time.sleep(1.1)  # event files sort by their name, whose first field is the time in seconds
    resumed = EnhanceLogger(tmp_path, purge_step=3)
    later = {role: {n: v / 2 for n, v in per.items()} for role, per in SCORES.items()}
    resumed.scalar("loss/total", 99.0, 3)
    resumed.attribute_scores(later, 3)
    resumed.validation_metrics({"psnr": 99.0, "psnr_input": 5.0}, 3)
    resumed.close()
    assert _steps_values(_plugin_reader(tmp_path), "loss/total") == [(1, 11.0), (2, 12.0), (3, 99.0)]
    for role in ROLES:
        acc = _plugin_reader(tmp_path / role)
        expected = [SCORES[role]["brightness"]] * 2 + [later[role]["brightness"]]
        assert _steps_values(acc, "attributes/brightness") == [(s, pytest.approx(v)) for s, v in
                                                                zip((1, 2, 3), expected)]
    assert [s for s, _ in _steps_values(_plugin_reader(tmp_path / "output"), "val/psnr")] == [1, 2, 3]
