"""The README's figures stay tied to the files their commands wrote: the speed row to
``benchmarks/results/loss_cost_cpu.csv`` (``python benchmarks/loss_cost.py``), the ship
rule's count to ``research/trials.csv`` (``attiqa-pretrain verdict --record``). A figure
edited by hand, or a result refreshed without the README, fails here."""

from __future__ import annotations

import csv
import re

from enhancement_helpers import REPO

README = (REPO / "README.md").read_text()


def _rows(path):
    with open(REPO / path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_speed_row_is_the_benchmark_csv():
    rows = {(r["kind"], r["arch"], r["precision"], r["size"]): r for r in _rows("benchmarks/results/loss_cost_cpu.csv")}
    mine, clip = rows[("attiqa", "resnet10t", "fp32", "256")], rows[("clipiqa", "RN50", "fp32", "256")]
    row = re.search(r"^\| `AttiqaLoss` \(default, resnet10t\) \| ([\d.]+) \| (\d+) \|$", README, re.M)
    assert row, "the README's speed row is missing"
    assert row.group(1) == f"{float(mine['images_per_s']):.1f}" and row.group(2) == f"{float(mine['peak_mem_mib']):.0f}"
    ratio = float(mine["images_per_s"]) / float(clip["images_per_s"])
    assert f"That is {ratio:.1f}x a CLIP-RN50-based loss at 256 px" in README


def test_the_ship_rule_count_is_the_trials_record():
    rows = _rows("research/trials.csv")
    met = {r["trial"]: sum(v == "yes" for k, v in r.items() if k.endswith("_pass")) for r in rows}
    shipped = [r["trial"] for r in rows if r["shipped"] == "yes"][-1]
    best = max(v for k, v in met.items() if k != shipped)
    words = re.search(r"the\s+shipped\s+model\s+meets\s+(\d+),\s+the\s+best\s+candidate\s+so\s+far\s+(\d+)", README)
    assert words, "the README's ship-rule sentence is missing"
    assert (int(words.group(1)), int(words.group(2))) == (met[shipped], best)
