"""``attiqa-pretrain verdict``: may this quality model ship as the default?

A quality model is judged twice (docs/default_model.md, "The ship rule"): as a measure
(``attiqa-pretrain validity``) and as an optimisation target (``attiqa-pretrain
robustness``). This command reads what those two reports wrote (``robustness.csv``,
``validity.csv``) and, when given, the loss-cost benchmark's CSV, and prints one verdict
line per rule and a final PASS or FAIL (exit status 0 or 1). A rule whose figures are
missing from the reports counts as a failure. ``--record`` appends the verdict, the
checkpoint's recipe and its figures to the trials CSV (one row per trial).

The rules (held-out photos, 128 px crops, 4/255 L-infinity attacks of the report):

- every attribute's attack earns at most 1.5x what the clipped honest fix earns, and at
  most 50% of the full fix, at the loss's default ``views``;
- every physical anchor is met at 128 and at 256 px;
- the loss-only generator with every target at the clean photos' median score, at views
  0 and 2: every crop's degraded attribute moves the right way by its independent
  measure, PSNR to the clean crop at most 3 dB below the degraded input's, RMS contrast
  at least 0.8x the input's, no painted colour cast (at most 0.05 above the input's or
  the clean crop's);
- the loss-only generator with every target at 1 (the stress test), at views 0 and 2:
  no flat, embossed or single-hue output;
- the L1 + 0.1 x loss generator loses at most 0.2 dB PSNR against L1 alone;
- validity: the lowest SRCC of a trained family >= 0.95, of an unseen family >= 0.85;
  no family moves another score by more than 0.40, nor by more than its own;
  JPEG at falling quality lowers the mean score (SRCC with quality >= 0.5);
- throughput (with ``--loss-cost``): at ``views=0`` at least 0.8x the images/s of the
  untoned network; at ``views >= 1``, at least 2x the CLIP RN50 loss's.

Example:

  attiqa-pretrain robustness --checkpoint C --images PHOTOS --out runs/rob
  attiqa-pretrain validity --checkpoint C --images PHOTOS --out runs/val
  attiqa-pretrain verdict --robustness runs/rob --validity runs/val \\
      --checkpoint C --record research/trials.csv --trial h34
"""

from __future__ import annotations

import argparse
import csv
import datetime
import inspect
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from attiqa_loss import ATTRIBUTES

DESCRIPTION = __doc__

#: The limits of the rule (docs/default_model.md).
ATTACK_EPS_255 = 4
MAX_ATTACK_VS_CLIPPED_FIX = 1.5
MAX_ATTACK_VS_FIX = 0.50
ANCHOR_SIZES = (128, 256)
GENERATOR_VIEWS = (0, 2)
MAX_PSNR_DROP_DB = 3.0
MIN_RMS_RATIO = 0.8
MAX_CAST_EXCESS = 0.05
MAX_L1_LOSS_PSNR_DROP_DB = 0.2
MIN_TRAINED_SRCC = 0.95
MIN_UNSEEN_SRCC = 0.85
MAX_OFF_TARGET_SHIFT = 0.40
MIN_JPEG_SRCC = 0.5
MIN_SPEED_VS_UNTONED = 0.8
MIN_SPEED_VS_CLIP_WITH_VIEWS = 2.0

#: Config keys that say where a run ran, not what it learnt (left out of a recipe).
RUNTIME_KEYS = frozenset({"images", "threads", "device"})
RECIPE_SECTIONS = ("model", "synthetic", "loss", "train", "hardening")


@dataclass(frozen=True)
class Verdict:
    """One rule's outcome. ``figure``: its headline number (NaN when not measured);
    ``passed``: ``None`` when the reports hold no figures for it."""

    key: str
    rule: str
    value: str
    figure: float
    passed: Optional[bool]

    def line(self) -> str:
        status = {True: "PASS", False: "FAIL", None: "MISSING"}[self.passed]
        return f"{status:<7} {self.rule}: {self.value}"


def default_views() -> int:
    """The ``views`` that :class:`attiqa_loss.AttiqaLoss` uses unless told otherwise."""
    from attiqa_loss import AttiqaLoss

    return int(inspect.signature(AttiqaLoss.__init__).parameters["views"].default)


def _missing(key: str, rule: str, what: str) -> Verdict:
    return Verdict(key, rule, f"not measured ({what})", math.nan, None)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def attack_verdicts(rows: Sequence[dict], views: int) -> List[Verdict]:
    """The two attack rules at ``views``: gain over the clipped fix's, and over the full fix's."""
    rule_c = f"4/255 attack / clipped honest fix, every attribute, views {views} (<= {MAX_ATTACK_VS_CLIPPED_FIX}x)"
    rule_f = f"4/255 attack / full fix, every attribute, views {views} (<= {MAX_ATTACK_VS_FIX:.0%})"
    at = {r["attribute"]: r for r in rows if r.get("section") == "attack" and int(_num(r["views"])) == views
          and _num(r["eps_255"]) == ATTACK_EPS_255}
    if set(at) != set(ATTRIBUTES):
        what = f"robustness --views {views} --eps {ATTACK_EPS_255}"
        return [_missing("attack_vs_clipped_fix", rule_c, what), _missing("attack_vs_fix", rule_f, what)]
    vs_fix = [_num(at[a]["gain_vs_fix"]) for a in ATTRIBUTES]
    clipped = [_num(at[a]["clip_fix_vs_fix"]) for a in ATTRIBUTES]
    # An attack whose clipped fix earns nothing (or an undefined ratio) counts as unbounded.
    vs_clipped = [g / c if c > 0 and not math.isnan(g) else math.inf for g, c in zip(vs_fix, clipped)]
    worst_c = max(vs_clipped)
    worst_f = max(math.inf if math.isnan(v) else v for v in vs_fix)
    return [
        Verdict("attack_vs_clipped_fix", rule_c, "/".join(f"{v:.1f}" for v in vs_clipped) + "x", worst_c,
                worst_c <= MAX_ATTACK_VS_CLIPPED_FIX),
        Verdict("attack_vs_fix", rule_f, "/".join(f"{v:.0%}" for v in vs_fix), worst_f, worst_f <= MAX_ATTACK_VS_FIX),
    ]


def anchor_verdict(rows: Sequence[dict]) -> Verdict:
    """Every anchor rule met at every size of :data:`ANCHOR_SIZES`; the figure counts the
    rules met at all of them."""
    rule = "physical anchors at " + " and ".join(f"{s}" for s in ANCHOR_SIZES) + " px (all)"
    anchors = [r for r in rows if r.get("section") == "anchor"]
    sizes = {int(_num(r["size"])) for r in anchors}
    if not set(ANCHOR_SIZES) <= sizes:
        return _missing("anchors", rule, "robustness --anchor-sizes " + " ".join(map(str, ANCHOR_SIZES)))
    rules: Dict[str, List[str]] = {}
    for r in anchors:
        if int(_num(r["size"])) in ANCHOR_SIZES:
            failed = rules.setdefault(f"{r['anchor']}/{r['attribute']}", [])
            if not _bool(r["passed"]):
                failed.append(str(int(_num(r["size"]))))
    bad = [f"{name} at {', '.join(s)} px" for name, s in rules.items() if s]
    met = len(rules) - len(bad)
    value = f"{met}/{len(rules)} rules" + (" (not met: " + "; ".join(bad) + ")" if bad else "")
    return Verdict("anchors", rule, value, float(met), not bad)


def _bool(v: Any) -> bool:
    return v is True or str(v).strip().lower() == "true"


def _generator_row(rows: Sequence[dict], mode: str, views: int) -> Optional[dict]:
    return next((r for r in rows if r.get("section") == "generator" and r["mode"] == mode
                 and int(_num(r["views"])) == views), None)


def generator_verdicts(rows: Sequence[dict], views: int) -> List[Verdict]:
    """Loss-only generator at ``views``: typical targets (every check) and the stress test."""
    out = []
    rule = (f"loss-only generator, targets at the clean median, views {views} (every crop the right way, "
            f"PSNR >= input - {MAX_PSNR_DROP_DB:g} dB, RMS contrast >= {MIN_RMS_RATIO}x, cast <= +{MAX_CAST_EXCESS})")
    r = _generator_row(rows, "loss@median", views)
    if r is None:
        out.append(_missing(f"generator_median_v{views}", rule, f"robustness --views {views}"))
    else:
        right, drop = _num(r["right_way"]), _num(r["psnr_in_db"]) - _num(r["psnr_db"])
        rms, cast = _num(r["rms_ratio"]), _num(r["cast_excess"])
        ok = right >= 1.0 and drop <= MAX_PSNR_DROP_DB and rms >= MIN_RMS_RATIO and cast <= MAX_CAST_EXCESS
        out.append(Verdict(f"generator_median_v{views}", rule,
                           f"right way {right:.0%}, PSNR {_num(r['psnr_in_db']):.1f} -> {_num(r['psnr_db']):.1f} dB, "
                           f"RMS contrast {rms:.2f}x, cast {cast:+.3f}", drop, ok))
    rule = f"loss-only generator, every target 1 (stress), views {views} (no flat, embossed or single-hue output)"
    r = _generator_row(rows, "loss", views)
    if r is None or "embossed" not in r:
        out.append(_missing(f"stress_v{views}", rule, f"robustness --views {views}"))
    else:
        bad = [name for name in ("flat", "embossed", "single_hue") if _bool(r[name])]
        out.append(Verdict(f"stress_v{views}", rule,
                           ("; ".join(bad) if bad else "a photo") + f" (RMS {_num(r['rms_ratio']):.2f}x, structure "
                           f"drop {_num(r['structure_drop']):.2f}, detail {_num(r['detail_ratio']):.1f}x, hue "
                           f"{_num(r['hue_conc']):.2f}, PSNR {_num(r['psnr_db']):.1f} dB)", float(len(bad)), not bad))
    return out


def fidelity_verdict(rows: Sequence[dict], views: int) -> Verdict:
    rule = f"L1 + 0.1 x loss generator against L1 alone, views {views} (PSNR >= -{MAX_L1_LOSS_PSNR_DROP_DB} dB)"
    both, l1 = _generator_row(rows, "l1+loss", views), _generator_row(rows, "l1", views)
    if both is None or l1 is None:
        return _missing("l1_loss_psnr_delta", rule, f"robustness --views {views}")
    delta = _num(both["psnr_db"]) - _num(l1["psnr_db"])
    return Verdict("l1_loss_psnr_delta", rule, f"{delta:+.2f} dB ({_num(l1['psnr_db']):.1f} dB L1 alone)", delta,
                   delta >= -MAX_L1_LOSS_PSNR_DROP_DB)


def robustness_verdicts(rows: Sequence[dict], views: Optional[int] = None) -> List[Verdict]:
    """Every rule the robustness report's rows decide (``views``: the loss's default)."""
    views = default_views() if views is None else views
    out = attack_verdicts(rows, views) + [anchor_verdict(rows)]
    for v in GENERATOR_VIEWS:
        out += generator_verdicts(rows, v)
    return out + [fidelity_verdict(rows, views)]


def validity_verdicts(rows: Sequence[dict]) -> List[Verdict]:
    """Every rule the validity report's rows decide (the attiqa scorer's rows)."""
    fam = [r for r in rows if r.get("section") == "family" and r.get("scorer") == "attiqa"]
    jpeg = next((r for r in rows if r.get("section") == "jpeg" and r.get("scorer") == "attiqa"), None)
    rules = (f"validity, lowest SRCC of a trained family (>= {MIN_TRAINED_SRCC})",
             f"validity, lowest SRCC of an unseen family (>= {MIN_UNSEEN_SRCC})",
             f"largest off-target shift of a family (<= {MAX_OFF_TARGET_SHIFT:.2f} and below its own)",
             f"JPEG quality 95 -> 10, SRCC of the mean score with quality (>= {MIN_JPEG_SRCC})")
    if not fam or jpeg is None:
        return [_missing(k, rule, "attiqa-pretrain validity")
                for k, rule in zip(("validity_trained", "validity_unseen", "off_target", "jpeg_srcc"), rules)]
    out = []
    for key, rule, unseen, limit in (("validity_trained", rules[0], False, MIN_TRAINED_SRCC),
                                     ("validity_unseen", rules[1], True, MIN_UNSEEN_SRCC)):
        these = [r for r in fam if ("(unseen)" in r["case"]) == unseen]
        if not these:
            out.append(_missing(key, rule, "no such family in the report"))
            continue
        worst = min(these, key=lambda r: _num(r["srcc"]))
        out.append(Verdict(key, rule, f"{_num(worst['srcc']):.3f} ({worst['case']})", _num(worst["srcc"]),
                           _num(worst["srcc"]) >= limit))
    worst = max(fam, key=lambda r: _num(r["max_off_abs_shift"]))
    over_own = [r["case"] for r in fam if _num(r["max_off_abs_shift"]) >= abs(_num(r["on_shift"]))]
    off = _num(worst["max_off_abs_shift"])
    value = f"{off:.3f} ({worst['case']}, own {abs(_num(worst['on_shift'])):.3f})"
    if over_own:
        value += "; above its own shift: " + ", ".join(over_own)
    out.append(Verdict("off_target", rules[2], value, off, off <= MAX_OFF_TARGET_SHIFT and not over_own))
    srcc = _num(jpeg["srcc"])
    out.append(Verdict("jpeg_srcc", rules[3], f"{srcc:+.3f}", srcc, srcc >= MIN_JPEG_SRCC))
    return out


def throughput_verdict(rows: Optional[Sequence[dict]], views: int, tone: bool, backbone: str = "resnet10t") -> Verdict:
    """From ``benchmarks/loss_cost.py``'s CSV (fp32 rows at the smallest size measured):
    the candidate's images/s per loss call (``backbone``, toned or not) against the
    untoned network's (``views=0``) or the CLIP RN50 loss's (``views >= 1``)."""
    if views == 0:
        rule = f"loss throughput against the untoned network, views 0 (>= {MIN_SPEED_VS_UNTONED}x)"
    else:
        rule = f"loss throughput with views {views} against the CLIP RN50 loss (>= {MIN_SPEED_VS_CLIP_WITH_VIEWS}x)"
    if rows is None:
        return _missing("throughput", rule, "--loss-cost CSV of benchmarks/loss_cost.py")
    fp32 = [r for r in rows if r.get("precision", "fp32") == "fp32"]
    size = min((int(_num(r["size"])) for r in fp32 if "size" in r), default=None)
    speed = {(r["kind"], r.get("arch", "")): _num(r["images_per_s"]) for r in fp32
             if size is None or int(_num(r["size"])) == size}
    mine = speed.get(("attiqa-tone" if tone else "attiqa", backbone))
    other = speed.get(("attiqa", backbone)) if views == 0 else speed.get(("clipiqa", "RN50"))
    if mine is None or other is None or not other > 0:
        return _missing("throughput", rule, f"the loss-cost CSV lacks the {backbone} or RN50 rows to compare")
    ratio = (mine / max(views, 1)) / other
    limit = MIN_SPEED_VS_UNTONED if views == 0 else MIN_SPEED_VS_CLIP_WITH_VIEWS
    return Verdict("throughput", rule, f"{ratio:.2f}x ({size} px)", ratio, ratio >= limit)


def final(verdicts: Sequence[Verdict]) -> bool:
    """PASS only when every rule was measured and met."""
    return all(v.passed for v in verdicts)


def read_rows(path: Path) -> List[dict]:
    """The rows of a report's CSV (values as strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def recipe_of(config: dict) -> Dict[str, Dict[str, Any]]:
    """What a training config says the model learns: its :data:`RECIPE_SECTIONS` without
    :data:`RUNTIME_KEYS` (the photo folders and the machine's settings)."""
    return {s: {k: v for k, v in sorted((config.get(s) or {}).items()) if k not in RUNTIME_KEYS}
            for s in RECIPE_SECTIONS}


def trial_row(verdicts: Sequence[Verdict], *, trial: str, checkpoint: Optional[Path], note: str = "",
              shipped: bool = False) -> Dict[str, Any]:
    """One trials-CSV row: the trial, its verdict, its recipe (from the checkpoint's
    metadata), and each rule's headline figure and outcome."""
    from attiqa_loss import read_checkpoint_metadata
    from attiqa_train.files import sha256_file

    row: Dict[str, Any] = {"trial": trial, "date": datetime.date.today().isoformat(),
                           "verdict": "PASS" if final(verdicts) else "FAIL", "shipped": "yes" if shipped else "no"}
    if checkpoint is not None:
        training = read_checkpoint_metadata(checkpoint).get("training", {})
        config = training.get("config", {})
        row.update({
            "checkpoint": checkpoint.name, "weights_sha256": sha256_file(checkpoint),
            "init_checkpoint": (config.get("model") or {}).get("init_checkpoint") or "",
            "steps": training.get("steps", ""),
            "wall_min_last_segment": round(training.get("wall_time_s_this_run", math.nan) / 60, 1),
            "recipe": json.dumps(recipe_of(config), sort_keys=True),
        })
    for v in verdicts:
        row[v.key] = "" if math.isnan(v.figure) else round(v.figure, 4)
        row[f"{v.key}_pass"] = {True: "yes", False: "no", None: ""}[v.passed]
    row["note"] = note
    return row


def append_trial(path: Path, row: Dict[str, Any]) -> None:
    """Append ``row`` to the trials CSV at ``path`` (atomically; new columns are added)."""
    from attiqa_train.files import write_csv

    rows = read_rows(path) if path.is_file() else []
    columns = list(dict.fromkeys([k for r in rows for k in r] + list(row)))
    write_csv(path, rows + [row], columns)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robustness", type=Path, required=True,
                        help="folder (or robustness.csv) written by attiqa-pretrain robustness")
    parser.add_argument("--validity", type=Path, required=True,
                        help="folder (or validity.csv) written by attiqa-pretrain validity")
    parser.add_argument("--loss-cost", type=Path, default=None,
                        help="CSV of benchmarks/loss_cost.py --kinds attiqa attiqa-tone clipiqa --backbones resnet10t "
                             "(the throughput rule; without it that rule is missing and the verdict FAIL)")
    parser.add_argument("--views", type=int, default=None,
                        help="the loss's default views the attack rules read (default: AttiqaLoss's own default)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="the judged model: its tone setting picks the throughput row, --record reads its recipe")
    parser.add_argument("--record", type=Path, default=None, help="append the verdict to this trials CSV")
    parser.add_argument("--trial", default=None, help="the trial's name in --record (required with it)")
    parser.add_argument("--note", default="", help="a short note for --record")
    parser.add_argument("--shipped", action="store_true", help="mark the --record row as the shipped default")


def _csv_in(path: Path, name: str) -> Path:
    return path / name if path.is_dir() else path


def _read_report(option: str, path: Path, name: Optional[str]) -> List[dict]:
    """The rows of the CSV an option names (``name``: the file inside a folder given for
    it); a missing folder or file, or one that is no CSV, is a ``ValueError`` naming the
    option (exit status 2); another read error stays an ``OSError`` naming the file (3)."""
    if not path.exists():
        what = "no such folder or file" if name else "no such file"
        raise ValueError(f"{option} {path}: {what}")
    target = _csv_in(path, name) if name else path
    if name and path.is_dir() and not target.is_file():
        raise ValueError(f"{option} {path}: the folder holds no {name} (give the folder attiqa-pretrain "
                         f"{option.lstrip('-')} wrote, or its {name})")
    if target.is_dir():
        raise ValueError(f"{option} {path} is a folder, expected a CSV file")
    try:
        return read_rows(target)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{option} {target} is not a CSV report: {exc}") from None


def run(args: argparse.Namespace) -> int:
    prog = "attiqa-pretrain verdict"
    if args.record is not None and not args.trial:
        raise SystemExit(f"{prog}: --record needs --trial NAME")
    if args.views is not None and args.views < 0:
        raise SystemExit(f"{prog}: --views must be >= 0, got {args.views}")
    try:
        rob = _read_report("--robustness", args.robustness, "robustness.csv")
        val = _read_report("--validity", args.validity, "validity.csv")
        cost = _read_report("--loss-cost", args.loss_cost, None) if args.loss_cost is not None else None
        tone, backbone = False, "resnet10t"
        if args.checkpoint is not None:
            from attiqa_loss import read_checkpoint_metadata
            from attiqa_loss.weights_file import weight_file_option_error

            folder = weight_file_option_error(args.checkpoint)
            if folder is not None:
                raise ValueError(folder)
            if not args.checkpoint.exists():
                raise ValueError(f"--checkpoint {args.checkpoint}: no such file")
            try:
                metadata = read_checkpoint_metadata(args.checkpoint)
            except (FileNotFoundError, ValueError) as exc:  # CheckpointError is a ValueError
                raise ValueError(f"--checkpoint {args.checkpoint}: {exc}") from None
            norm = metadata.get("normalization")
            tone = bool(norm.get("tone", False)) if isinstance(norm, dict) else False
            backbone = str(metadata.get("backbone", backbone))
    except (ValueError, KeyError) as exc:  # an OSError other than a missing file: one line naming it, exit 3
        raise SystemExit(f"{prog}: {exc}") from None
    views = default_views() if args.views is None else args.views
    verdicts = robustness_verdicts(rob, views) + validity_verdicts(val) + [throughput_verdict(cost, views, tone, backbone)]
    for v in verdicts:
        print(v.line())
    passed = final(verdicts)
    print(f"{'PASS' if passed else 'FAIL'}: {sum(bool(v.passed) for v in verdicts)} of {len(verdicts)} rules met")
    if args.record is not None:
        append_trial(args.record, trial_row(verdicts, trial=args.trial, checkpoint=args.checkpoint, note=args.note,
                                            shipped=args.shipped))
        print(f"recorded {args.trial} in {args.record}", file=sys.stderr)
    return 0 if passed else 1
