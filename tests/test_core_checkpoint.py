"""Checkpoints: safetensors + metadata, strict loading, atomic saving (docs/method.md, section 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import attiqa_loss.weights_file as weights_file_module
from attiqa_loss import (
    ATTRIBUTES,
    FORMAT_VERSION,
    AttiqaLoss,
    CheckpointError,
    create_attiqa_net,
    load_attiqa,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from helpers import rewrite_checkpoint

TRAINING = {
    "recipe": "synthetic",
    "steps": 1200,
    "lr": 3e-4,
    "data": {"folders": ["a/b", "c"], "images": 17},
    "proxy_srcc": {"sharpness": 0.91, "noisiness": None},
}


_rewrite = rewrite_checkpoint


def _leftovers(folder: Path, keep: Path):
    return sorted(p.name for p in folder.iterdir() if p != keep)


# --------------------------------------------------------------------------- round trips


def test_round_trip_is_exact(tiny_net, tmp_path, image_batch):
    with torch.no_grad():  # make BatchNorm buffers non-trivial so they are checked too
        for m in tiny_net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = save_checkpoint(tiny_net, tmp_path / "sub" / "model.safetensors", training=TRAINING)
    assert path == tmp_path / "sub" / "model.safetensors" and path.is_file()
    loaded = load_checkpoint(path)
    ref, got = tiny_net.state_dict(), loaded.state_dict()
    assert list(got) == list(ref)
    for key in ref:
        assert got[key].dtype == ref[key].dtype, key
        assert torch.equal(got[key], ref[key]), key
    assert loaded.config() == tiny_net.config()
    assert loaded.training_info == TRAINING
    assert not loaded.training and all(p.requires_grad for p in loaded.parameters())
    x = image_batch(2)
    torch.testing.assert_close(loaded(x), tiny_net(x), rtol=0, atol=0)
    assert _leftovers(path.parent, path) == []


def test_metadata(tiny_checkpoint_path):
    meta = read_checkpoint_metadata(tiny_checkpoint_path)
    assert meta["format"] == "attiqa" and meta["format_version"] == str(FORMAT_VERSION)
    assert meta["backbone"] == "test_resnet"
    assert meta["attributes"] == list(ATTRIBUTES)
    assert meta["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert meta["normalization"]["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert meta["backbone_kwargs"] == {}
    assert meta["training"] == {"recipe": "random-init test model"}


def test_custom_normalisation_and_backbone_kwargs_round_trip(tmp_path, image_batch):
    net = create_attiqa_net("test_resnet", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0),
                            backbone_kwargs={"drop_rate": 0.1}).eval()
    loaded = load_checkpoint(save_checkpoint(net, tmp_path / "m.safetensors"))
    assert loaded.config() == net.config()
    assert loaded.backbone.drop_rate == 0.1
    x = image_batch(1)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_training_values_that_are_not_json_are_stored_as_text(tiny_net, tmp_path):
    path = save_checkpoint(tiny_net, tmp_path / "m.safetensors", training={"data": tmp_path, "steps": (1, 2)})
    assert read_checkpoint_metadata(path)["training"] == {"data": str(tmp_path), "steps": [1, 2]}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_saving(tiny_net, tmp_path, image_batch, dtype):
    full = save_checkpoint(tiny_net, tmp_path / "full.safetensors")
    half = save_checkpoint(tiny_net, tmp_path / "half.safetensors", dtype=dtype)
    ratio = half.stat().st_size / full.stat().st_size
    assert 0.45 < ratio < 0.55, ratio
    stored = load_file(str(half))
    assert stored["heads.sharpness.weight"].dtype == dtype
    assert stored["backbone.bn1.num_batches_tracked"].dtype == torch.int64  # integers stay integers
    loaded = load_checkpoint(half)
    for key, value in tiny_net.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype, key
        if value.is_floating_point():
            assert torch.equal(got, value.to(dtype).float()), key
    x = image_batch(2)
    torch.testing.assert_close(loaded(x), tiny_net(x), atol=2e-2, rtol=0)


def test_load_attiqa_and_loss_accept_paths(tiny_checkpoint_path, image_batch):
    x = image_batch(2)
    ref = load_checkpoint(tiny_checkpoint_path)(x)
    torch.testing.assert_close(load_attiqa(tiny_checkpoint_path)(x), ref, rtol=0, atol=0)
    torch.testing.assert_close(load_attiqa(str(tiny_checkpoint_path))(x), ref, rtol=0, atol=0)
    loss_fn = AttiqaLoss(checkpoint=str(tiny_checkpoint_path))
    torch.testing.assert_close(loss_fn.network(x), ref, rtol=0, atol=0)
    assert not any(p.requires_grad for p in loss_fn.network.parameters())


def test_map_location(tiny_checkpoint_path, device):
    net = load_checkpoint(tiny_checkpoint_path, map_location=device)
    assert all(p.device.type == device for p in net.parameters())
    assert net.mean.device.type == device


def test_saving_does_not_touch_the_network(tiny_net, tmp_path):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    save_checkpoint(tiny_net, tmp_path / "m.safetensors", dtype=torch.float16)
    assert all(torch.equal(before[k], v) and v.dtype == before[k].dtype for k, v in tiny_net.state_dict().items())


# --------------------------------------------------------------------------- loud failures


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*absent.safetensors"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_truncated_file(tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    tiny_checkpoint.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"tiny.safetensors is not a readable safetensors file: .*"):
        load_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("cut", [0, 4, 100])
def test_header_truncated(tiny_checkpoint, cut):
    tiny_checkpoint.write_bytes(tiny_checkpoint.read_bytes()[:cut])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        load_checkpoint(tiny_checkpoint)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match=r"noise.safetensors is not a readable safetensors file"):
        load_checkpoint(path)


def test_pickle_file_is_not_unpickled(tiny_net, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(tiny_net.state_dict(), path)
    with pytest.raises(CheckpointError, match="model.pt is not a readable safetensors file"):
        load_checkpoint(path)


def test_image_file(tmp_path, write_png):
    path = write_png(tmp_path / "photo.png")
    with pytest.raises(CheckpointError, match="photo.png is not a readable safetensors file"):
        load_checkpoint(path)


def test_safetensors_of_another_format(tiny_net, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(tiny_net.state_dict(), str(path))
    with pytest.raises(CheckpointError, match=r"plain.safetensors is not an attiqa checkpoint \(metadata format=None\)"):
        load_checkpoint(path)
    save_file(tiny_net.state_dict(), str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"not an attiqa checkpoint \(metadata format='pt'\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("version", ["2", "0", "1.0"])
def test_wrong_format_version(tiny_checkpoint, version):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "format_version": version})
    with pytest.raises(CheckpointError, match=rf"format_version='{version}'; this attiqa reads format_version=1"):
        load_checkpoint(tiny_checkpoint)


def test_missing_format_version(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=lambda m: {k: v for k, v in m.items() if k != "format_version"})
    with pytest.raises(CheckpointError, match="format_version=None"):
        load_checkpoint(tiny_checkpoint)


def test_wrong_attribute_order(tiny_checkpoint):
    swapped = list(ATTRIBUTES)
    swapped[0], swapped[4] = swapped[4], swapped[0]
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "attributes": json.dumps(swapped)})
    with pytest.raises(CheckpointError, match=r"stores attributes \['noisiness', .*'sharpness'\]; this attiqa expects the order \['sharpness'"):
        load_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("field", ["attributes", "normalization", "training"])
def test_malformed_metadata(tiny_checkpoint, field):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, field: "{not json"})
    with pytest.raises(CheckpointError, match="missing or malformed metadata"):
        load_checkpoint(tiny_checkpoint)


def test_missing_metadata_field(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=lambda m: {k: v for k, v in m.items() if k != "normalization"})
    with pytest.raises(CheckpointError, match=r"missing or malformed metadata: KeyError\('normalization'\)"):
        load_checkpoint(tiny_checkpoint)


def test_missing_keys(tiny_checkpoint):
    _rewrite(tiny_checkpoint, tensors=lambda s: {k: v for k, v in s.items() if k not in ("heads.noisiness.bias", "backbone.bn1.weight")})
    with pytest.raises(CheckpointError, match=r"missing keys \['backbone.bn1.weight', 'heads.noisiness.bias'\], unexpected keys \[\]"):
        load_checkpoint(tiny_checkpoint)


def test_unexpected_keys(tiny_checkpoint):
    _rewrite(tiny_checkpoint, tensors=lambda s: {**s, "heads.blur.weight": torch.zeros(1, 96)})
    with pytest.raises(CheckpointError, match=r"missing keys \[\], unexpected keys \['heads.blur.weight'\]"):
        load_checkpoint(tiny_checkpoint)


def test_shape_mismatch(tiny_checkpoint):
    _rewrite(tiny_checkpoint, tensors=lambda s: {**s, "heads.sharpness.weight": torch.zeros(1, 97)})
    with pytest.raises(CheckpointError, match=r"shape mismatches \['heads.sharpness.weight: checkpoint \(1, 97\) vs network \(1, 96\)'\]"):
        load_checkpoint(tiny_checkpoint)


def test_backbone_changed_in_metadata(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "backbone": "resnet10t"})
    with pytest.raises(CheckpointError, match=r"does not match backbone 'resnet10t': missing keys \[.+\], .*shape mismatches \[.*heads.sharpness.weight: checkpoint \(1, 96\) vs network \(1, 512\)"):
        load_checkpoint(tiny_checkpoint)


def test_unknown_backbone_in_metadata(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "backbone": "no_such_backbone"})
    with pytest.raises(CheckpointError, match=r"metadata backbone='no_such_backbone' is not an architecture that timm\.list_models\(\) lists"):
        load_checkpoint(tiny_checkpoint)


# --------------------------------------------------------------------------- atomic saving


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_the_previous_file(tiny_net, tiny_checkpoint, monkeypatch, error):
    before = tiny_checkpoint.read_bytes()
    calls = []

    def broken_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        Path(filename).write_bytes(b"partial write")  # a half-written file that must not survive
        raise error

    monkeypatch.setattr(weights_file_module, "save_file", broken_save_file)
    with torch.no_grad():
        tiny_net.heads["sharpness"].bias += 1.0
    with pytest.raises(type(error)):
        save_checkpoint(tiny_net, tiny_checkpoint, training={"should": "not appear"})
    assert calls and Path(calls[0]) != tiny_checkpoint, "save_file must write to a temporary path"
    assert tiny_checkpoint.read_bytes() == before
    assert _leftovers(tiny_checkpoint.parent, tiny_checkpoint) == []
    assert read_checkpoint_metadata(tiny_checkpoint)["training"] == {"recipe": "random-init test model"}


def test_failed_first_save_leaves_nothing(tiny_net, tmp_path, monkeypatch):
    def broken_save_file(tensors, filename, metadata=None):
        raise OSError("disk full")

    monkeypatch.setattr(weights_file_module, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_net, tmp_path / "new.safetensors")
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_the_file(tiny_net, tiny_checkpoint, image_batch):
    with torch.no_grad():
        tiny_net.heads["contrast"].bias += 2.0
    save_checkpoint(tiny_net, tiny_checkpoint, training={"v": 2})
    loaded = load_checkpoint(tiny_checkpoint)
    assert loaded.training_info == {"v": 2}
    x = image_batch(1)
    torch.testing.assert_close(loaded(x), tiny_net(x), rtol=0, atol=0)
    assert _leftovers(tiny_checkpoint.parent, tiny_checkpoint) == []


def test_tone_normalised_network_round_trips(tmp_path, image_batch):
    torch.manual_seed(0)
    net = create_attiqa_net("test_resnet", normalize_tone=True).eval()
    path = save_checkpoint(net, tmp_path / "toned.safetensors")
    assert read_checkpoint_metadata(path)["normalization"]["tone"] is True
    loaded = load_checkpoint(path)
    assert loaded.normalize_tone and loaded.config() == net.config()
    x = image_batch(2)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_centre_chroma_network_round_trips_and_its_key_is_checked(tmp_path, image_batch):
    torch.manual_seed(0)
    net = create_attiqa_net("test_resnet", normalize_tone=True, centre_chroma=True).eval()
    path = save_checkpoint(net, tmp_path / "centred.safetensors")
    assert read_checkpoint_metadata(path)["normalization"]["centre_chroma"] is True
    loaded = load_checkpoint(path)
    assert loaded.centre_chroma and loaded.config() == net.config()
    x = image_batch(2)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    for value, message in (("yes", r"normalization.centre_chroma must be true or false, got 'yes'"),
                           (True, r"normalization.centre_chroma is true without tone normalisation")):
        def edit(m, value=value):
            norm = json.loads(m["normalization"])
            return {**m, "normalization": json.dumps({**norm, "tone": value is not True, "centre_chroma": value})}

        bad = tmp_path / f"bad_{value}.safetensors"
        bad.write_bytes(path.read_bytes())
        _rewrite(bad, metadata=edit)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(bad)


def test_files_without_the_tone_key_load_untoned(tiny_checkpoint_path):
    assert "tone" not in read_checkpoint_metadata(tiny_checkpoint_path)["normalization"]
    assert load_checkpoint(tiny_checkpoint_path).normalize_tone is False
    assert load_checkpoint(tiny_checkpoint_path).centre_chroma is False


def test_tone_key_must_be_a_boolean(tiny_checkpoint):
    def edit(m):
        norm = json.loads(m["normalization"])
        return {**m, "normalization": json.dumps({**norm, "tone": "yes"})}

    _rewrite(tiny_checkpoint, metadata=edit)
    with pytest.raises(CheckpointError, match=r"normalization.tone must be true or false, got 'yes'"):
        load_checkpoint(tiny_checkpoint)


def test_tone_key_that_does_not_match_the_tensors_is_refused(tiny_checkpoint):
    """An untoned file marked toned: the heads' widths differ, and the load says so."""
    def edit(m):
        norm = json.loads(m["normalization"])
        return {**m, "normalization": json.dumps({**norm, "tone": True})}

    _rewrite(tiny_checkpoint, metadata=edit)
    with pytest.raises(CheckpointError, match=r"heads\.sharpness\.weight"):
        load_checkpoint(tiny_checkpoint)
