"""What ``attiqa-score`` prints and logs: the per-image table, csv and json (:func:`_format`),
the folder comparison's records (:func:`comparison_records`, :func:`_format_comparison`)
and per-folder summary (:func:`folder_summary`), and the TensorBoard runs of ``--logdir``
(:func:`run_names`, :func:`_write_tensorboard`). No torch import until TensorBoard is
written."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .attributes import ATTRIBUTES

if TYPE_CHECKING:
    from .folder_scores import FolderComparison

Row = Tuple[str, List[float]]


def run_names(paths: Sequence[Path]) -> List[str]:
    """One distinct TensorBoard run name per path: its last component, or as many trailing
    components as needed to tell it from the others (``a/out`` and ``b/out``)."""
    parts = []
    for p in paths:
        q = Path(os.path.abspath(p))
        parts.append((q.parts[1:] if q.anchor else q.parts) or ("root",))
    names: List[str] = []
    for i, own in enumerate(parts):
        others = [o for j, o in enumerate(parts) if j != i]
        k = 1
        while k < len(own) and any(o[-k:] == own[-k:] for o in others):
            k += 1
        name = "/".join(own[-k:])
        while name in names:  # the same folder named twice
            name += "_"
        names.append(name)
    return names


def _printable(text: str) -> str:
    """``text`` for one cell of a table row: a character that would break the row or the
    terminal (a newline, tab, carriage return, escape, ...) is written as its escape
    (``\\n``, ``\\t``, ``\\x1b``); everything else, non-ASCII letters included, stays as it is.
    (csv and json quote such names themselves.)"""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _fmt_row(label: str, width: int, values: Sequence[float], *, count: Optional[str] = None, signed: bool = False) -> str:
    spec = "+12.3f" if signed else "12.3f"
    head = f"{label:<{width}}" + (f"  {count:>6}" if count is not None else "")
    return head + "  " + "  ".join(f"{v:>{spec}}" for v in values)


def _image_table(rows: List[Row], *, mean_row: bool) -> str:
    names = list(ATTRIBUTES)
    shown = [_printable(p) for p, _ in rows]  # one line per file, whatever its name holds
    width = max([len("path")] + [len(p) for p in shown])
    lines = [f"{'path':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines += [_fmt_row(p, width, s) for p, (_, s) in zip(shown, rows)]
    if mean_row and len(rows) > 1:
        means = [sum(s[i] for _, s in rows) / len(rows) for i in range(len(names))]
        lines.append(_fmt_row("mean", width, means))
    return "\n".join(lines)


def _format(rows: List[Row], fmt: str) -> str:
    """One folder (or files): one record per image, plus a mean row in the table."""
    names = list(ATTRIBUTES)
    if fmt == "json":
        return json.dumps([{"path": p, **{n: round(v, 6) for n, v in zip(names, s)}} for p, s in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", *names])
        writer.writerows([[p, *(f"{v:.6f}" for v in s)] for p, s in rows])
        return buf.getvalue().rstrip("\n")
    return _image_table(rows, mean_row=True)


def comparison_records(rows: List[Row], per_path: Dict[Path, List[Path]], comparison: "FolderComparison"
                       ) -> List[Dict[str, Any]]:
    """One record per scored image: ``folder`` (the PATH it was found under, the first one
    if several), ``path``, ``name`` (relative to that folder), the five scores and
    ``<attribute>_diff`` (its score minus that of the same name in the first folder;
    None for the first folder's images and for names not present in every folder)."""
    owner: Dict[str, int] = {}
    for index, files in enumerate(per_path.values()):
        for f in files:
            owner.setdefault(str(f), index)
    roots = list(per_path)
    diffs = [comparison.differences(i) if i else {} for i in range(len(roots))]
    names = [dict(zip(map(str, f.paths), f.names)) for f in comparison.folders]
    records = []
    for path, scores in rows:
        index = owner[path]
        name = names[index][path]
        diff = diffs[index].get(name)
        record: Dict[str, Any] = {"folder": str(roots[index]), "path": path, "name": name}
        record.update({n: v for n, v in zip(ATTRIBUTES, scores)})
        record.update({f"{n}_diff": (diff[n] if diff else None) for n in ATTRIBUTES})
        records.append(record)
    return records


def _format_comparison(records: List[Dict[str, Any]], rows: List[Row], fmt: str) -> str:
    names = list(ATTRIBUTES)
    columns = ["folder", "path", "name", *names, *(f"{n}_diff" for n in names)]
    if fmt == "json":
        return json.dumps([{k: (round(r[k], 6) if isinstance(r[k], float) else r[k]) for k in columns}
                           for r in records], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in records:
            writer.writerow([f"{r[k]:.6f}" if isinstance(r[k], float) else ("" if r[k] is None else r[k])
                             for k in columns])
        return buf.getvalue().rstrip("\n")
    return _image_table(rows, mean_row=False)


def folder_summary(comparison: "FolderComparison", labels: Sequence[str]) -> str:
    """The per-folder table: each folder's image count and mean per attribute, then each
    later folder's difference to the first (paired when the folders share names)."""
    names = list(ATTRIBUTES)
    labels = [_printable(s) for s in labels]
    width = max([len("folder")] + [len(s) for s in labels])
    lines = [f"{'folder':<{width}}  {'images':>6}  " + "  ".join(f"{n:>12}" for n in names)]
    for label, folder in zip(labels, comparison.folders):
        lines.append(_fmt_row(label, width, list(folder.means().values()), count=str(len(folder))))
    ref = labels[0]
    n = len(comparison.paired_names)
    lines.append("")
    if comparison.paired:
        lines.append(f"difference to {ref}: mean of the per-image differences over the {n} image(s) "
                     "paired by relative path")
        unmatched = sum(len(comparison.unmatched(i)) for i in range(len(labels)))
        if unmatched:
            lines.append(f"({unmatched} image(s) without a counterpart in every folder are left out)")
    else:
        lines.append(f"difference to {ref}: difference of the folder means (the folders share no file names)")
    for i, label in enumerate(labels[1:], start=1):
        count = str(n) if comparison.paired else "-"
        lines.append(_fmt_row(label, width, list(comparison.mean_difference(i).values()), count=count, signed=True))
    return "\n".join(lines)


#: The tag of one attribute's score, the same in every TensorBoard log of the package
#: (``attiqa-score --logdir`` and the training runs): ``attributes/<name>``; ``attributes/all``
#: is the mean of the five in ``attiqa-score``'s runs.
ATTRIBUTE_TAG = "attributes/{}"
#: The tag of one attribute's difference to the first folder (``attiqa-score A B --logdir``).
DIFFERENCE_TAG = "difference/{}"
#: Text tags of ``attiqa-score --logdir`` (in the logdir's own run, shown as ``.``): the
#: per-folder means and, comparing folders, the differences to the first, as tables.
TEXT_MEANS_TAG = "tables/means"
TEXT_DIFFERENCE_TAG = "tables/difference"
#: Steps each folder mean is logged at: two points draw a short flat line, not a dot.
TB_MEAN_STEPS = (0, 1)


def attribute_tag(name: str) -> str:
    """``attributes/<name>``: the TensorBoard tag of one attribute's score (see :data:`ATTRIBUTE_TAG`)."""
    return ATTRIBUTE_TAG.format(name)


def _mean_description(name: str) -> str:
    what = (f"{name} ({ATTRIBUTES.descriptions[name]})" if name in ATTRIBUTES
            else "all: the mean of the five attribute scores")
    return (
        f"{what}: mean over the folder's images; quality-aligned score in [0, 1], 1 = desirable, higher is "
        "better. One run (line) per folder; the step axis (0 to 1) carries no meaning, the line is one value. "
        "The spread of the scores is in the histograms scores/<name>; the means as a table in the text "
        f"{TEXT_MEANS_TAG}."
    )


def _difference_description(name: str, reference: str, how: str) -> str:
    return (
        f"{name} ({ATTRIBUTES.descriptions[name]}): this folder's score minus {reference}'s ({how}); "
        "above 0 = more desirable than the reference, below 0 = less. One run (line) per compared folder; "
        f"the step axis carries no meaning. As a table in the text {TEXT_DIFFERENCE_TAG}."
    )


def _markdown_cell(text: str) -> str:
    return _printable(text).replace("\\", "\\\\").replace("|", "\\|")


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _write_tensorboard(logdir: Path, folder_scores: Dict[str, List[List[float]]],
                       differences: Optional[Dict[str, Dict[str, float]]] = None, *, reference: str = "",
                       how: str = "") -> None:
    """One run per folder under ``logdir`` (named by :func:`run_names`), and two text
    tables in the logdir's own run; no other run, so every line in a chart is a folder:

    - folder runs: the histograms ``scores/<name>`` of its images' scores (step 0), and
      ``attributes/<name>`` (the training runs' tag, :func:`attribute_tag`) and
      ``attributes/all`` (the mean of all five), the folder means at steps 0 and 1, so
      each mean draws as a short horizontal line;
    - ``differences`` (``{run: {attribute: value}}``, the folders after the first when
      folders are compared): ``difference/<name>`` = that folder minus ``reference`` (the
      first folder's run), at steps 0 and 1 (``how``: how it was taken, for the tooltip);
    - the logdir's own run (``.``): the text :data:`TEXT_MEANS_TAG`, a table of every
      folder's image count and means, and with ``differences`` :data:`TEXT_DIFFERENCE_TAG`.

    The charts keep TensorBoard's own axis range (no constant reference runs: they would
    draw as lines that look like data). Every scalar tag carries a description (the
    tooltip): quality-aligned, 1 = desirable. Runs are created in the order of
    ``folder_scores``: TensorBoard colours runs in the order they started.
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import scalar

    differences = differences or {}
    described = {**{attribute_tag(n): _mean_description(n) for n in [*ATTRIBUTES, "all"]},
                 **{DIFFERENCE_TAG.format(n): _difference_description(n, reference, how) for n in ATTRIBUTES}}

    def write_lines(writer, values: Dict[str, float]) -> None:
        file_writer = writer._get_file_writer()
        for step in TB_MEAN_STEPS:
            for tag, value in values.items():
                summary = scalar(tag, float(value), new_style=True)
                summary.value[0].metadata.summary_description = described[tag]
                file_writer.add_summary(summary, step)

    table_rows = []
    for label, rows in folder_scores.items():
        writer = SummaryWriter(str(logdir / label))
        scores = torch.tensor(rows, dtype=torch.float64)
        for i, name in enumerate(ATTRIBUTES):
            writer.add_histogram(f"scores/{name}", scores[:, i].float(), 0)
        means = {**dict(zip(ATTRIBUTES, scores.mean(dim=0).tolist())), "all": scores.mean().item()}
        write_lines(writer, {attribute_tag(n): v for n, v in means.items()})
        if label in differences:
            write_lines(writer, {DIFFERENCE_TAG.format(n): v for n, v in differences[label].items()
                                 if v == v})  # NaN (nothing to compare) is left out
        writer.close()
        table_rows.append([_markdown_cell(label), str(len(rows)), *(f"{means[n]:.3f}" for n in [*ATTRIBUTES, "all"])])
    writer = SummaryWriter(str(logdir))
    writer.add_text(TEXT_MEANS_TAG, "Mean score per folder (quality-aligned, 1 = desirable)\n\n"
                    + _markdown_table(["folder", "images", *ATTRIBUTES, "all"], table_rows), 0)
    if differences:
        rows = [[_markdown_cell(label), *(f"{diff[n]:+.3f}" for n in ATTRIBUTES)]
                for label, diff in differences.items()]
        writer.add_text(TEXT_DIFFERENCE_TAG, f"Difference to {_markdown_cell(reference)} ({how})\n\n"
                        + _markdown_table(["folder", *ATTRIBUTES], rows), 0)
    writer.close()
