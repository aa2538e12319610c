"""TensorBoard output: ``attiqa-score --logdir`` read back with TensorBoard's own reader, and the
custom-scalars layout that puts input/output/target of one attribute in one chart."""

import csv
import io
from contextlib import redirect_stdout

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from attiqa_loss import ATTRIBUTES
from attiqa_loss.cli import main as score_main
from enhancement.tensorboard_utils import RunLogger, attribute_layout, attribute_tag

from enhancement_helpers import single_thread  # noqa: F401 (autouse fixture)
from enhancement_helpers import write_images, write_quality_model


def _value(event):
    return float(tensor_util.make_ndarray(event.tensor_proto))


def _reader(path):
    acc = EventAccumulator(str(path), size_guidance={"tensors": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_attiqa_score_logdir_writes_per_folder_means(tmp_path):
    write_images(tmp_path / "sunny", 3, size=(40, 48), seed=0)
    write_images(tmp_path / "dark", 2, size=(40, 48), seed=10)
    quality = write_quality_model(tmp_path / "q.safetensors")
    logdir = tmp_path / "tb"
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = score_main(
            [str(tmp_path / "sunny"), str(tmp_path / "dark"), "--checkpoint", str(quality), "--format", "csv",
             "--logdir", str(logdir), "--no-progress"]
        )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(rows) == 5
    for folder, count in (("sunny", 3), ("dark", 2)):
        acc = _reader(logdir / folder)
        mine = [r for r in rows if f"/{folder}/" in r["path"]]
        assert len(mine) == count
        for name in ATTRIBUTES:
            (event,) = acc.Tensors(f"mean/{name}")
            expected = sum(float(r[name]) for r in mine) / count
            assert _value(event) == pytest.approx(expected, abs=1e-5)
            assert f"scores/{name}" in acc.Tags()["histograms"]
            assert acc.Histograms(f"scores/{name}")[0].histogram_value.num == count
        assert "mean/all" in acc.Tags()["scalars"] + acc.Tags()["tensors"]


def test_run_logger_layout_and_descriptions_round_trip(tmp_path):
    log = RunLogger(tmp_path)
    log.layout(attribute_layout(ATTRIBUTES, ["fidelity"], with_lpips=True))
    scores = {"input": {"brightness": 0.2}, "output": {"brightness": 0.7}, "target": {"brightness": 0.8}}
    log.attribute_scores(scores, step=5)
    log.close()
    acc = _reader(tmp_path)
    for role, value in (("input", 0.2), ("output", 0.7), ("target", 0.8)):
        tag = attribute_tag("brightness", role)
        assert _value(acc.Tensors(tag)[0]) == pytest.approx(value)
        desc = acc.SummaryMetadata(tag).summary_description
        assert "quality-aligned" in desc and "1 = well lit, 0 = dark" in desc
    assert list(acc.PluginTagToContent("custom_scalars")) == ["custom_scalars__config__"]


def test_layout_groups_each_attribute_in_one_multiline_chart():
    layout = attribute_layout(ATTRIBUTES, ["fidelity", "attiqa"])
    (category,) = [v for k, v in layout.items() if k.startswith("attributes")]
    assert len(category) == len(ATTRIBUTES)
    for name in ATTRIBUTES:
        ((kind, tags),) = [v for k, v in category.items() if k.startswith(name + " ")]
        assert kind == "Multiline" and tags == [f"attributes/{name}/{r}" for r in ("input", "output", "target")]
    assert layout["loss"]["terms"] == ["Multiline", ["loss/fidelity", "loss/attiqa", "loss/total"]]
    assert "LPIPS" not in layout["validation"]
    with pytest.raises(ValueError, match="role must be one of"):
        attribute_tag("brightness", "reference")


def test_disabled_logger_writes_nothing(tmp_path):
    log = RunLogger(tmp_path / "tb", enabled=False)
    log.scalar("loss/total", 1.0, 0)
    log.attribute_scores({"input": {"brightness": 0.5}}, 0)
    log.close()
    assert not (tmp_path / "tb").exists()
