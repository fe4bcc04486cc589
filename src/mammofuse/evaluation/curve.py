"""A learning curve: would more breasts help this model?

The same setup is cross-validated on identical folds once per training share, each fold's model learning
from that share of the fold's training patients (`data.train_fraction`: whole patients, each label mix
kept, nested: a larger share keeps every patient of a smaller one); validation and the held-out fold stay
whole. So every point is scored on the same breasts, and two neighbouring points are compared paired (the
same breasts, the same patient resamples). A curve still rising at its last step (the paired difference
between the two largest shares above zero) says that more breasts like these are likely to help; one whose
last step is within chance does not show it. By default (`curve --budget steps`) a share trains for as many
optimizer steps as the whole training part (epochs / share): with the epochs fixed, a quarter of the breasts
would also be a quarter of the training, and a model that learns slowly (strong augmentation) would read as
data-starved when it is only undertrained. The clinical-only regression, fitted on the same shares, is
drawn beside the model, and the apparent AUC (each fold model on its own training breasts, scored as new
breasts are: far above the out-of-fold AUC, the model overfits, and more breasts would narrow the gap).

No curve is extrapolated past the cohort: a power law fitted to three to five points whose intervals are
this wide would promise a precision the points do not have.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammofuse.data.splits import TRAIN
from mammofuse.evaluation import metrics
from mammofuse.evaluation.compare import oof_scores, paired
from mammofuse.evaluation.result import p_text
from mammofuse.runs import Run

CLINICAL = "clinical"


def _training(run: Run) -> dict[str, float]:
    """The mean over folds of the training breasts and positives, and the apparent AUC (each fold model on
    its own training breasts, unaugmented; NaN where a fold was evaluated before it was measured)."""
    result = run.read_cv_evaluation()
    breasts, positives = [], []
    for r in range(result.repeats):
        for k in range(result.folds):
            labels = run.fold(r, k).read_data().query(f"split == '{TRAIN}'")["label"]
            breasts.append(len(labels))
            positives.append(int(labels.sum()))
    apparent = result.model.train_auc
    return {
        "train_breasts": float(np.mean(breasts)),
        "train_positives": float(np.mean(positives)),
        "train_auc": float("nan") if apparent is None else apparent,
    }


def learning_curve(setups: dict[str, dict[float, Run]]) -> pd.DataFrame:
    """One row per setup and training share (ascending): the training breasts per fold, the pooled
    out-of-fold AUC of the model and of the clinical-only regression with their intervals, the apparent AUC,
    and the paired difference from the share before (`step_*`). With several setups (the first is the
    reference), also each later setup's paired difference from the first at the same share (`versus_*`) and
    how that difference changed since the smallest share (`change_*`: does the setup matter more, or less,
    with fewer breasts?). Every figure is on the breasts that every run scored, on one set of resamples."""
    shares = sorted(next(iter(setups.values())))
    runs_by_key = {_key(name, share): run for name, runs in setups.items() for share, run in runs.items()}
    scores = {key: oof_scores(run, "score") for key, run in runs_by_key.items()}
    clinical = {f"{CLINICAL} {key}": oof_scores(run, "clinical_score") for key, run in runs_by_key.items()}
    with_clinical = all(c.notna().all() for c in clinical.values())
    labels, groups, values = paired({**scores, **clinical} if with_clinical else scores)
    first = next(iter(setups))

    def contrast(*terms: tuple[float, str, float]) -> dict[str, float]:
        """sum of weight x AUC of (setup, share), paired"""
        weighted = [(weight, values[_key(name, share)]) for weight, name, share in terms]
        return metrics.paired_auc_contrast(labels, weighted, groups)

    rows = []
    for name, runs in setups.items():
        for i, share in enumerate(shares):
            ci = metrics.auc_with_ci(labels, values[_key(name, share)], groups)
            row: dict[str, object] = {
                "preset": name,
                "train_fraction": share,
                "epochs": runs[share].read_config().train.epochs,
                **_training(runs[share]),
                "breasts": len(labels),
                "auc": ci["auc"],
                "auc_low": ci["low"],
                "auc_high": ci["high"],
            }
            if with_clinical:
                base = metrics.auc_with_ci(labels, values[f"{CLINICAL} {_key(name, share)}"], groups)
                row.update(clinical_auc=base["auc"], clinical_low=base["low"], clinical_high=base["high"])
            if i:
                _put(row, "step", contrast((1, name, share), (-1, name, shares[i - 1])))
            if name != first:
                versus = ((1, name, share), (-1, first, share))
                _put(row, "versus", contrast(*versus))
                if i:  # minus the same difference at the smallest share
                    _put(row, "change", contrast(*versus, (-1, name, shares[0]), (1, first, shares[0])))
            rows.append(row)
    return pd.DataFrame(rows)


def _key(name: str, share: float) -> str:
    return f"{name} @ {share}"


def _put(row: dict[str, object], prefix: str, result: dict[str, float]) -> None:
    """A paired contrast into `row` as PREFIX, PREFIX_low, PREFIX_high and PREFIX_p."""
    row.update(
        {
            prefix: result["difference"],
            f"{prefix}_low": result["low"],
            f"{prefix}_high": result["high"],
            f"{prefix}_p": result["p_value"],
        }
    )


def verdict(table: pd.DataFrame) -> str:
    """What one setup's curve's last step says, in one sentence."""
    if len(table) < 2:
        return "one share only: a curve needs two or more"
    last, before = table.iloc[-1], table.iloc[-2]
    step = (
        f"from {before['train_breasts']:.0f} to {last['train_breasts']:.0f} training breasts per fold the "
        f"AUC changed by {last['step']:+.3f} [{last['step_low']:+.3f}, {last['step_high']:+.3f}]"
    )
    if last["step_low"] > 0:
        return f"{step}: still rising at the full cohort, so more breasts like these are likely to help"
    if last["step_high"] < 0:
        return (
            f"{step}: lower with more breasts, which points at the training, not the data (look at the folds)"
        )
    added = last["train_breasts"] - before["train_breasts"]
    return (
        f"{step}: within chance, so the curve does not show that more breasts like these would help; the "
        f"interval's upper end bounds what the last {added:.0f} breasts per fold added"
    )


def versus(table: pd.DataFrame) -> list[str]:
    """For each setup after the first: its difference from the first at the smallest and the whole share,
    and how that difference changed, in one sentence each."""
    names = list(dict.fromkeys(table["preset"]))
    sentences = []
    for name in names[1:]:
        rows = table[table["preset"] == name]
        small, whole = rows.iloc[0], rows.iloc[-1]

        def at(row: pd.Series) -> str:
            return (
                f"{row['versus']:+.3f} [{row['versus_low']:+.3f}, {row['versus_high']:+.3f}] at "
                f"{row['train_breasts']:.0f} training breasts per fold"
            )

        change = f"{whole['change']:+.3f} [{whole['change_low']:+.3f}, {whole['change_high']:+.3f}]"
        if whole["change_low"] > 0 or whole["change_high"] < 0:
            reading = f"so the difference depends on the training size ({p_text(whole['change_p'])})"
        else:
            reading = "within chance: the curves do not show that it depends on the training size"
        sentences.append(
            f"{name} minus {names[0]}: {at(small)} and {at(whole)}; from the smallest share to the whole it "
            f"changed by {change}, {reading}"
        )
    return sentences
