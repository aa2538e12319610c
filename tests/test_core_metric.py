"""``AttiqaMetric``: per-attribute means accumulated over batches and across processes."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
import types

import pytest
import torch
import torch.distributed as dist
from torch import nn

import attiqa_loss
from attiqa_loss import ATTRIBUTES, AttiqaMetric

from helpers import build_tiny_net, make_texture


def _batch(n: int, seed: int, size=(48, 40)) -> torch.Tensor:
    return torch.stack([make_texture(*size, seed=seed + i) for i in range(n)])


def _expected_means(net, batches) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(b) for b in batches]).mean(0)


def test_accumulates_the_mean_over_batches_of_different_sizes():
    net = build_tiny_net(0)
    metric = AttiqaMetric(net)
    batches = [_batch(3, 0), _batch(1, 10, (64, 33)), _batch(2, 20)]
    for b in batches:
        metric.update(b)
    out = metric.compute()
    assert list(out) == list(ATTRIBUTES)
    assert all(v.ndim == 0 for v in out.values())
    # the mean over all 6 images, not the mean of the three batch means
    expected = _expected_means(net, batches)
    assert torch.stack(list(out.values())) == pytest.approx(expected, abs=1e-6)
    batch_means = torch.stack([_expected_means(net, [b]) for b in batches]).mean(0)
    assert not torch.allclose(expected, batch_means, atol=1e-6)


def test_reset_forward_and_the_network_is_left_alone():
    net = build_tiny_net(1)
    before = copy.deepcopy(net.state_dict())
    metric = AttiqaMetric(net)
    with pytest.raises(RuntimeError, match=r"before any image was passed to update\(\)"):
        metric.compute()  # nothing seen yet: no mean, and no silent NaN
    metric.update(_batch(2, 0))
    metric.reset()
    b1, b2 = _batch(2, 5), _batch(3, 9)
    first = metric(b1)  # forward: this batch's value, and it is accumulated
    assert torch.stack(list(first.values())) == pytest.approx(_expected_means(net, [b1]), abs=1e-6)
    metric(b2)
    total = torch.stack(list(metric.compute().values()))
    assert total == pytest.approx(_expected_means(net, [b1, b2]), abs=1e-6)
    metric.train()
    assert not metric.net.training  # batch norm statistics never move while scoring
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_copies_keep_their_own_state():
    metric = AttiqaMetric(build_tiny_net(0))
    metric.update(_batch(2, 0))
    clone = copy.deepcopy(metric)
    clone.update(_batch(2, 7))
    assert float(metric.count) == 2 and float(clone.count) == 4
    assert torch.stack(list(metric.compute().values())) == pytest.approx(
        _expected_means(metric.net, [_batch(2, 0)]), abs=1e-6)


def test_rejects_something_that_is_not_an_attiqa_net():
    with pytest.raises(TypeError, match="AttiqaNet"):
        AttiqaMetric(nn.Linear(2, 2))


def test_loads_a_checkpoint(tiny_checkpoint_path):
    metric = AttiqaMetric(checkpoint=tiny_checkpoint_path)
    metric.update(_batch(1, 0))
    assert torch.stack(list(metric.compute().values())) == pytest.approx(
        _expected_means(build_tiny_net(0), [_batch(1, 0)]), abs=1e-6)


def _rank_worker(rank: int, world: int, port: int, result_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metric = AttiqaMetric(build_tiny_net(0))
        # rank 0 sees 3 images, rank 1 sees 1: the global mean weights images, not ranks
        metric.update(_batch(3 if rank == 0 else 1, 100 * rank))
        means = torch.stack(list(metric.compute().values()))
        local = metric._compute_local() if hasattr(metric, "_compute_local") else None
        if rank == 0:
            torch.save({"means": means, "count": metric.count.clone(), "local": local}, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
@pytest.mark.slow
def test_two_processes_reduce_to_the_global_mean(tmp_path, free_port):
    if attiqa_loss.metric.TORCHMETRICS_AVAILABLE:
        pytest.skip("torchmetrics synchronises its own states; this checks the fallback's all_reduce")
    result = tmp_path / "rank0.pt"
    torch.multiprocessing.spawn(_rank_worker, args=(2, free_port, str(result)), nprocs=2, join=True)
    got = torch.load(result, weights_only=True)
    net = build_tiny_net(0)
    assert got["means"] == pytest.approx(_expected_means(net, [_batch(3, 0), _batch(1, 100)]), abs=1e-6)
    assert float(got["count"]) == 3  # compute() leaves the local states as they were
    assert torch.stack(list(got["local"].values())) == pytest.approx(_expected_means(net, [_batch(3, 0)]), abs=1e-6)


def test_is_a_torchmetrics_metric_when_torchmetrics_is_installed(monkeypatch):
    """With torchmetrics importable, the class derives from torchmetrics.Metric and declares
    summed states (checked with a minimal stand-in: the real package is optional)."""
    calls = []

    class FakeMetric(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.kwargs = kwargs
            self._defaults = {}

        def add_state(self, name, default, dist_reduce_fx=None, persistent=False):
            calls.append((name, tuple(default.shape), dist_reduce_fx))
            self._defaults[name] = default.clone()
            setattr(self, name, default.clone())

    fake = types.ModuleType("torchmetrics")
    fake.Metric = FakeMetric
    monkeypatch.setitem(sys.modules, "torchmetrics", fake)
    module = importlib.reload(attiqa_loss.metric)
    try:
        assert module.TORCHMETRICS_AVAILABLE and issubclass(module.AttiqaMetric, FakeMetric)
        metric = module.AttiqaMetric(build_tiny_net(0), sync_on_compute=False)
        assert metric.kwargs == {"sync_on_compute": False}
        assert calls == [("score_sum", (len(ATTRIBUTES),), "sum"), ("count", (), "sum")]
        assert module.AttiqaMetric.higher_is_better and not module.AttiqaMetric.is_differentiable
        metric.update(_batch(2, 0))
        assert torch.stack(list(metric.compute().values())) == pytest.approx(
            _expected_means(metric.net, [_batch(2, 0)]), abs=1e-6)
    finally:
        monkeypatch.delitem(sys.modules, "torchmetrics")
        importlib.reload(attiqa_loss.metric)


# -- the real torchmetrics.Metric (the stand-in above checks the wiring without it) -----------

requires_torchmetrics = pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is None,
                                           reason="torchmetrics is not installed (pip install 'attiqa[dev]')")


def _real_metric_class():
    """``AttiqaMetric`` as the module defines it now (another test reloads the module)."""
    module = importlib.import_module("attiqa_loss.metric")
    assert module.TORCHMETRICS_AVAILABLE
    return module.AttiqaMetric


@requires_torchmetrics
def test_is_a_real_torchmetrics_metric_that_updates_computes_and_resets():
    import torchmetrics

    net = build_tiny_net(0)
    metric = _real_metric_class()(net)
    assert isinstance(metric, torchmetrics.Metric)
    assert metric.higher_is_better and not metric.is_differentiable and not metric.full_state_update
    batches = [_batch(3, 0), _batch(1, 10, (64, 33)), _batch(2, 20)]
    for b in batches:
        metric.update(b)
    assert metric.update_count == 3 and float(metric.count) == 6
    out = metric.compute()
    assert list(out) == list(ATTRIBUTES) and all(v.ndim == 0 for v in out.values())
    assert torch.stack(list(out.values())) == pytest.approx(_expected_means(net, batches), abs=1e-6)
    # forward: this batch's value, and it joins the running mean
    extra = _batch(2, 30)
    batch_value = metric(extra)
    assert torch.stack(list(batch_value.values())) == pytest.approx(_expected_means(net, [extra]), abs=1e-6)
    assert torch.stack(list(metric.compute().values())) == pytest.approx(
        _expected_means(net, [*batches, extra]), abs=1e-6)
    metric.reset()
    assert float(metric.count) == 0 and torch.equal(metric.score_sum, torch.zeros(len(ATTRIBUTES)))
    with pytest.warns(UserWarning, match="before the ``update``"), \
            pytest.raises(RuntimeError, match=r"before any image was passed to update\(\)"):
        metric.compute()  # no silent NaN after a reset either
    metric.update(extra)
    assert torch.stack(list(metric.compute().values())) == pytest.approx(_expected_means(net, [extra]), abs=1e-6)
    # In a MetricCollection, compute flattens the attribute dict into the collection's keys.
    collection = torchmetrics.MetricCollection([_real_metric_class()(net)], prefix="val/")
    collection.update(batches[0])
    values = collection.compute()
    assert list(values) == [f"val/{a}" for a in ATTRIBUTES]
    assert torch.stack(list(values.values())) == pytest.approx(_expected_means(net, [batches[0]]), abs=1e-6)


@requires_torchmetrics
def test_torchmetrics_sync_sums_the_states_of_every_process_without_a_process_group():
    """The sync path of ``compute`` with a stand-in gather (no ``torch.distributed``): a
    second "rank" saw one image, this one three; the mean weighs images, not ranks, and
    the local states are left as they were."""
    net = build_tiny_net(0)
    cls = _real_metric_class()
    other = cls(net)
    other.update(_batch(1, 100))
    gathered = []

    def gather(tensor, group=None):  # what gather_all_tensors returns: this rank's tensor, then the other's
        theirs = {tuple(other.score_sum.shape): other.score_sum, (): other.count}[tuple(tensor.shape)]
        gathered.append(tuple(tensor.shape))
        return [tensor, theirs.to(tensor)]

    metric = cls(net, dist_sync_fn=gather, distributed_available_fn=lambda: True)
    metric.update(_batch(3, 0))
    means = torch.stack(list(metric.compute().values()))
    assert sorted(gathered) == [(), (len(ATTRIBUTES),)]  # both states, summed
    assert means == pytest.approx(_expected_means(net, [_batch(3, 0), _batch(1, 100)]), abs=1e-6)
    assert float(metric.count) == 3  # unsynced again after compute
    # sync()/unsync() by hand: the summed states, then the local ones back.
    metric.sync(dist_sync_fn=gather, distributed_available=lambda: True)
    assert float(metric.count) == 4
    metric.unsync()
    assert float(metric.count) == 3
    # sync_on_compute=False keeps compute local.
    local = cls(net, dist_sync_fn=gather, distributed_available_fn=lambda: True, sync_on_compute=False)
    local.update(_batch(3, 0))
    assert torch.stack(list(local.compute().values())) == pytest.approx(_expected_means(net, [_batch(3, 0)]), abs=1e-6)
