"""Result tables of ``finetune`` and ``evaluate``: per-split CSV, medians in JSON, a printed table."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

from attiqa_train import files

__all__ = ["METRICS", "summarize", "write_csv", "write_summary", "format_table"]

#: Reported metrics; all higher-is-better in [-1, 1].
METRICS = ("srcc", "plcc", "plcc_plain", "krcc")


def summarize(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Median (the reported figure), mean and population std of each metric over split rows."""
    out: Dict[str, Any] = {"splits": len(rows)}
    for stat, fn in (("median", statistics.median), ("mean", statistics.fmean), ("std", statistics.pstdev)):
        out[stat] = {m: float(fn([float(r[m]) for r in rows])) for m in METRICS} if rows else {}
    out["logistic_fits"] = f"{sum(int(float(r.get('logistic_fit', 0))) for r in rows)}/{len(rows)}"
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) with ``columns`` atomically; floats get 6 decimals."""
    files.write_csv(path, rows, columns, fmt=lambda v: f"{v:.6f}" if isinstance(v, float) else v)


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    files.write_json(path, summary)


def format_table(rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    """Per-split lines and the median line, for the terminal."""
    lines = [f"{'split':>6} {'n_test':>6} " + " ".join(f"{m:>10}" for m in METRICS)]
    for r in rows:
        lines.append(f"{r['split']!s:>6} {r['n_test']!s:>6} " + " ".join(f"{float(r[m]):>10.4f}" for m in METRICS))
    if summary.get("median"):
        lines.append(f"{'median':>6} {'':>6} " + " ".join(f"{summary['median'][m]:>10.4f}" for m in METRICS))
    return "\n".join(lines)
