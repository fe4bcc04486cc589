"""What a clinical reader asks of a report first (TRIPOD+AI, CLAIM): where the breasts went, who they
are (Table 1), how the model does in subgroups, and whether using it would help (the decision curve).
Each function reads a run's files and returns plain data or a matplotlib Figure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mammofuse.domain import VIEWS
from mammofuse.evaluation import metrics
from mammofuse.problems import EXCLUDED
from mammofuse.runs import Work, read_problems

SPLITS = ("train", "val", "test")


@dataclass
class Flow:
    """Breasts from the export to the analysis (CONSORT-like)."""

    found: int  # breasts with an image or a label row
    found_patients: int
    ingest_out: list[tuple[str, int]]  # reason -> breasts left out at ingest
    ingested: int
    preprocess_out: list[tuple[str, int]]
    analysed: int
    patients: int
    parts: list[tuple[str, int, int]]  # (split or fold, breasts, positives)


def _breasts_left_out(
    path: Path, kept: set[tuple[str, str]]
) -> tuple[list[tuple[str, int]], set[tuple[str, str]]]:
    """Per reason, the breasts an exclusions file leaves out (not those merely warned about, nor images
    of breasts that were kept: a duplicate or an older exam)."""
    table = read_problems(path)
    table = table[(table["severity"] == EXCLUDED) & (table["patient_id"] != "")]
    keys = zip(table["patient_id"], table["side"], table["category"], strict=True)
    out = {(patient, side): category for patient, side, category in keys if (patient, side) not in kept}
    return Counter(out.values()).most_common(), set(out)


def flow(data: pd.DataFrame, work: Work, preprocess_problems: Path, train_fraction: float = 1.0) -> Flow:
    """`data`: the analysed breasts with their split (or fold); `preprocess_problems`: the run's;
    `train_fraction`: the run's data.train_fraction (the training patients it did not draw are left out
    after preprocessing, with that reason)."""
    manifest, _ = work.read_manifest()
    ingested = set(zip(manifest["patient_id"], manifest["side"], strict=True))
    ingest_out, lost_at_ingest = _breasts_left_out(work.exclusions, ingested)
    analysed = set(zip(data["patient_id"], data["side"], strict=True))
    preprocess_out, lost_at_preprocessing = _breasts_left_out(preprocess_problems, analysed)
    not_drawn = len(ingested - lost_at_preprocessing - analysed)
    if train_fraction < 1 and not_drawn:
        preprocess_out.append(
            (f"training patients not drawn (data.train_fraction = {train_fraction:g})", not_drawn)
        )
    found = ingested | lost_at_ingest
    if "split" not in data:
        parts = [(f"fold {k}", len(g), int(g["label"].sum())) for k, g in data.groupby("fold")]  # from 1
    else:
        parts = [
            (s, int((data["split"] == s).sum()), int(data.loc[data["split"] == s, "label"].sum()))
            for s in SPLITS
        ]
    return Flow(
        found=len(found),
        found_patients=len({p for p, _ in found}),
        ingest_out=ingest_out,
        ingested=len(ingested),
        preprocess_out=preprocess_out,
        analysed=len(data),
        patients=int(data["patient_id"].nunique()),
        parts=parts,
    )


def _left_out(reasons: list[tuple[str, int]], stage: str) -> str:
    if not reasons:
        return ""
    each = ", ".join(f"{reason}: {n}" for reason, n in reasons)
    return f"; {sum(n for _, n in reasons)} left out at {stage} ({each})"


def flow_text(f: Flow) -> str:
    """The flow in one line of text, for the page (the figure's numbers, readable and searchable)."""
    parts = ", ".join(f"{name} {n} ({pos} positive)" for name, n, pos in f.parts)
    found = f"{f.found} breasts of {f.found_patients} patients with an image or a label"
    return (
        f"{found}{_left_out(f.ingest_out, 'ingest')}; {f.ingested} ingested"
        f"{_left_out(f.preprocess_out, 'preprocessing')}; {f.analysed} breasts of {f.patients} patients "
        f"analysed: {parts}."
    )


def flow_figure(f: Flow) -> Figure:
    """The flow as boxes and arrows: the main path down the left, what left it to the right."""
    steps = [
        (
            f"{f.found} breasts of {f.found_patients} patients\nwith an image or a label",
            f.ingest_out,
            "ingest",
        ),
        (f"{f.ingested} breasts ingested", f.preprocess_out, "preprocessing"),
        (f"{f.analysed} breasts of {f.patients} patients analysed", [], ""),
    ]
    height = 1.6 * len(steps) + 1.6
    fig = Figure(figsize=(10, 0.62 * height), layout="constrained")
    ax = fig.subplots()
    ax.set(xlim=(0, 10), ylim=(0, height), xticks=[], yticks=[])
    ax.axis("off")
    box = {"boxstyle": "round,pad=0.4", "fc": "#eef3fb", "ec": "#335"}
    side = {"boxstyle": "round,pad=0.4", "fc": "#fff4e0", "ec": "#8a4b00"}
    y = height - 0.7
    for i, (text, out, stage) in enumerate(steps):
        ax.text(2.6, y, text, ha="center", va="center", fontsize=12, bbox=box)
        if out:
            lines = [f"left out at {stage}: {sum(n for _, n in out)}"] + [f"  {r}: {n}" for r, n in out[:6]]
            if len(out) > 6:
                lines.append(f"  other reasons: {sum(n for _, n in out[6:])}")
            ax.text(6.0, y - 0.8, "\n".join(lines), ha="left", va="center", fontsize=10, bbox=side)
            ax.annotate("", xy=(5.9, y - 0.8), xytext=(2.6, y - 0.8), arrowprops={"arrowstyle": "->"})
        if i < len(steps) - 1:
            ax.annotate("", xy=(2.6, y - 1.25), xytext=(2.6, y - 0.35), arrowprops={"arrowstyle": "->"})
        y -= 1.6
    parts = "    ".join(f"{name}: {n} ({pos} positive)" for name, n, pos in f.parts)
    ax.annotate("", xy=(2.6, y + 0.35), xytext=(2.6, y + 1.25), arrowprops={"arrowstyle": "->"})
    ax.text(0.2, y, parts, ha="left", va="center", fontsize=11, bbox=box)
    return fig


def table_one(
    data: pd.DataFrame, info: dict[str, Any], classes: tuple[str, str] = ("label 1", "label 0")
) -> dict[str, object]:
    """Table 1: every clinical input (`info`: ingest's numeric and categorical columns) by label (`classes`:
    the columns' names, positive first) and by split (or fold), median [IQR] or n (%), with missing counts;
    breasts and patients per column."""
    by = "split" if "split" in data else "fold"
    groups: list[tuple[str, pd.DataFrame]] = [("all", data)]
    groups += [(name, data[data["label"] == v]) for name, v in zip(classes, (1, 0), strict=True)]
    groups += [(f"fold {s}" if by == "fold" else str(s), g) for s, g in data.groupby(by, sort=by == "fold")]
    if by == "split":
        order = {s: i for i, s in enumerate(SPLITS)}
        groups = groups[:3] + sorted(groups[3:], key=lambda g: order.get(g[0], 9))
    rows: list[dict[str, Any]] = [
        {"variable": "breasts", "values": [str(len(g)) for _, g in groups]},
        {"variable": "patients", "values": [str(g["patient_id"].nunique()) for _, g in groups]},
    ]
    for column in info.get("numeric", []):
        if column in data:
            rows.append(
                {"variable": f"{column}, median [IQR]", "values": [_median(g[column]) for _, g in groups]}
            )
    for column in info.get("categorical", []):
        if column in data:
            rows += _levels(f"{column}, n (%)", column, groups)
    unit = VIEWS[0].column("manufacturer")
    if unit in data and data[unit].nunique() > 1:  # breasts from more than one imaging unit: which, where
        rows += _levels("imaging unit (CC manufacturer), n (%)", unit, groups)
    return {"columns": [name for name, _ in groups], "rows": rows}


def _levels(title: str, column: str, groups: list[tuple[str, pd.DataFrame]]) -> list[dict[str, Any]]:
    """A categorical variable's rows of Table 1: its title, n (%) of each level, and missing where any is."""
    every = groups[0][1][column]
    rows: list[dict[str, Any]] = [{"variable": title, "values": ["" for _ in groups]}]
    for level in sorted(every.dropna().astype(str).unique()):
        shares = [_share(g[column].astype(str) == level, g) for _, g in groups]
        rows.append({"variable": level, "values": shares, "indent": True})
    missing = [int(g[column].isna().sum()) for _, g in groups]
    if any(missing):
        rows.append({"variable": "missing", "values": [str(m) for m in missing], "indent": True})
    return rows


def _median(values: pd.Series) -> str:
    numbers = pd.to_numeric(values, errors="coerce")
    known = numbers.dropna()
    if known.empty:
        return "-"
    q1, med, q3 = np.percentile(known, [25, 50, 75])
    missing = int(numbers.isna().sum())
    return f"{med:.1f} [{q1:.1f}, {q3:.1f}]" + (f" ({missing} missing)" if missing else "")


def _share(hit: pd.Series, group: pd.DataFrame) -> str:
    n = int(hit.sum())
    return f"{n} ({100 * n / max(len(group), 1):.0f}\u00a0%)"  # a narrow column breaks before "(", not "%"


SUBGROUPS = {  # column -> how to band it (None: its own categories)
    "density": None,
    "age": [(0, 50, "< 50"), (50, 70, "50-69"), (70, 200, ">= 70")],
    "tumour_size_mm": [(0, 20.0001, "<= 20 mm"), (20.0001, 50.0001, "21-50 mm"), (50.0001, 1e9, "> 50 mm")],
    "cc_manufacturer": None,
}


def subgroups(scored: pd.DataFrame, column: str = "probability") -> list[dict[str, str]]:
    """AUC with its patient-bootstrap interval in each subgroup the cohort has (density, age band,
    tumour size band, manufacturer); a group with fewer than 20 of a class is flagged, not hidden, and one
    with fewer than 5 of a class gets its AUC without an interval (a bootstrap of a handful is degenerate).
    An interval of no width (a group whose classes separate perfectly in every resample) is flagged too.
    `scored`: one row per scored breast with label, the score column, patient_id and the data columns."""
    rows = []
    for variable, bands in SUBGROUPS.items():
        if variable not in scored or scored[variable].isna().all():
            continue
        if bands is None:
            labels = scored[variable].astype(str)
        else:
            values = pd.to_numeric(scored[variable], errors="coerce")
            labels = pd.Series("unknown", index=scored.index)
            for low, high, name in bands:
                labels[(values >= low) & (values < high)] = name
        if labels.nunique() < 2:
            continue
        order = [name for _, _, name in bands] + ["unknown"] if bands else sorted(labels.unique())
        for level in [name for name in order if (labels == name).any()]:
            part = scored[labels == level]
            y, p = part["label"].to_numpy(), part[column].to_numpy()
            positives, negatives = int(y.sum()), int((y == 0).sum())
            fewest = min(positives, negatives)
            if fewest >= metrics.FEWEST_FOR_INTERVAL:
                interval = metrics.auc_with_ci(y, p, part["patient_id"].to_numpy())
                auc = f"{interval['auc']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"
                notes = []
                if fewest < metrics.SMALL_CLASS:
                    notes.append(f"fewer than {metrics.SMALL_CLASS} of a class: unstable")
                if interval["low"] == interval["high"]:  # e.g. classes separated in every resample
                    notes.append(
                        "the same AUC in every resample: an interval of no width understates the uncertainty"
                    )
                note = "; ".join(notes)
            elif fewest:
                auc = f"{metrics.auc(y, p):.3f} (no interval)"
                note = f"fewer than {metrics.FEWEST_FOR_INTERVAL} of a class: too few for an interval"
            else:
                auc, note = "n/a (one class)", ""
            rows.append(
                {
                    "variable": variable.replace("cc_", ""),
                    "group": str(level),
                    "breasts": str(len(part)),
                    "positives": str(positives),
                    "auc": auc,
                    "note": note,
                }
            )
    return rows
