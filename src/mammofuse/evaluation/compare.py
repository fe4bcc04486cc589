"""A fair comparison of setups: every preset cross-validated on identical folds, paired differences.

Each setup's pooled out-of-fold AUC (patient bootstrap interval; each fold on one scale, as `cv` pools) and,
against the first setup (e.g. the study's `seed_parity`), the paired difference on the same breasts and
resamples with its interval, its p-value and the Holm-adjusted p-value over all the comparisons made (Holm
1979). The clinical-only logistic regression, fitted in the same folds, is compared like a setup. Beside
each, its apparent AUC (the fold models on their own training breasts, mean over the folds) and optimism
(apparent minus pooled AUC): what a setup meant to fight overfitting should shrink. With marked tumours
(`compare --regions`), where each setup's Grad-CAM maps look: `explain.checks.paired_localisation`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammofuse.domain import VIEWS
from mammofuse.evaluation import metrics
from mammofuse.runs import Run

CLINICAL_ONLY = "clinical only"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: p sorted ascending, the i-th (0-based) times (m - i), kept monotone."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def oof_scores(run: Run, column: str) -> pd.Series:
    """Out-of-fold scores indexed by (patient_id, side, label, repeat)."""
    oof = run.read_oof()
    return oof.set_index(["patient_id", "side", "label", "repeat"])[column]


def paired(scores: dict[str, pd.Series]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The breasts every one of `scores` scored (a preset's own preprocessing may have left one out): their
    labels, patients, and each one's scores as (repeats, breasts), in one order."""
    common = pd.concat(scores, axis=1, join="inner").dropna()
    wide = {name: common[name].unstack("repeat") for name in scores}  # (breasts, repeats)
    index = wide[next(iter(scores))].index.to_frame(index=False)
    values = {name: table.to_numpy().T for name, table in wide.items()}
    return index["label"].to_numpy(), index["patient_id"].to_numpy(), values


def compare_runs(runs: dict[str, Run]) -> pd.DataFrame:
    """One row per setup (and the clinical-only baseline of the first), differences against the first."""
    names = list(runs)
    # each fold's scores on one scale (cv.standardised), as the setups' pooled AUCs rank them
    scores = {name: oof_scores(run, "score") for name, run in runs.items()}
    scores[CLINICAL_ONLY] = oof_scores(runs[names[0]], "clinical_score")
    labels, groups, wide = paired(scores)
    first = wide[names[0]]
    rows = []
    for name, values in wide.items():
        ci = metrics.auc_with_ci(labels, values, groups)
        row = {
            "preset": name,
            "breasts": len(labels),
            "pooled_auc": ci["auc"],
            "auc_low": ci["low"],
            "auc_high": ci["high"],
        }
        result = runs.get(name, runs[names[0]]).read_cv_evaluation()  # clinical only: the first's regression
        part = result.model if name in runs else result.baseline
        if name in runs and part is not None:
            folds = part.fold_aucs
            row.update(fold_auc_mean=float(np.nanmean(folds)), fold_auc_sd=float(np.nanstd(folds, ddof=1)))
        if part is not None and part.train_auc is not None:  # how far it overfits
            row.update(apparent_auc=part.train_auc, optimism=part.optimism)  # as on its cv page
        if name != names[0]:
            diff = metrics.paired_auc_difference(labels, values, first, groups)
            row.update(
                auc_diff=diff["difference"], diff_low=diff["low"], diff_high=diff["high"], p=diff["p_value"]
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    compared = table["p"].notna()
    table.loc[compared, "p_holm"] = holm(table.loc[compared, "p"].tolist())
    return table


def _interval(r: pd.Series, column: str, sign: str = "") -> str:
    """A share and its interval in percent ("" where not measured)."""
    if pd.isna(r.get(column)):
        return ""
    mean, low, high = (100 * r[c] for c in (column, f"{column}_low", f"{column}_high"))
    return f"{mean:{sign}.0f} % [{low:{sign}.0f}, {high:{sign}.0f}]"


def _by_view(r: pd.Series, column: str, sign: str = "") -> str:
    """ "CC 93 % [85, 99], MLO 27 % [15, 40]" ("" where not measured)."""
    shares = [(v.value, _interval(r, f"{column}_{v.value.lower()}", sign)) for v in VIEWS]
    return ", ".join(f"{v} {x}" for v, x in shares if x)


def _with_views(r: pd.Series, column: str, sign: str = "") -> str:
    """A share with its interval, then each view's ("" where not measured)."""
    total, views = _interval(r, column, sign), _by_view(r, column, sign)
    return f"{total} ({views})" if total and views else total


def maps_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """Per setup: how often its maps' peak lies on the tumour and how much of their mass, on the positive
    breasts' maps every setup scored, with the paired differences against the first (percent, the peak's
    each view apart too); where every setup is a patch model, how often its top attention tile touches
    the tumour."""
    return [
        {
            "preset": r["preset"],
            "maps": str(int(r["tumour_maps"])),
            "peak": _interval(r, "tumour_peak"),
            "peak_views": _by_view(r, "tumour_peak"),
            "peak_diff": _with_views(r, "tumour_peak_diff", "+"),
            "mass": _interval(r, "tumour_mass"),
            "mass_diff": _interval(r, "tumour_mass_diff", "+"),
            "attention": _interval(r, "attention_peak"),
            "attention_views": _by_view(r, "attention_peak"),
            "attention_diff": _with_views(r, "attention_peak_diff", "+"),
        }
        for _, r in table.iterrows()
        if not pd.isna(r.get("tumour_maps"))
    ]


def maps_lines(table: pd.DataFrame) -> list[str]:
    """What `maps_rows` says, a line per setup (the terminal)."""
    first = table["preset"].iloc[0]
    lines = []
    for r in maps_rows(table):
        against = f"; vs {first}: {r['peak_diff']}, mass {r['mass_diff']}" if r["peak_diff"] else ""
        attention = ""
        if r["attention"]:
            attention = f"; a top attention tile on it in {r['attention']} ({r['attention_views']})"
            attention += f", vs {first}: {r['attention_diff']}" if r["attention_diff"] else ""
        lines.append(
            f"maps of {r['preset']} on the positive breasts' marked tumours ({r['maps']} maps every setup "
            f"scored): the peak on the tumour in {r['peak']} ({r['peak_views']}), {r['mass']} of the mass "
            f"there{against}{attention}"
        )
    return lines
