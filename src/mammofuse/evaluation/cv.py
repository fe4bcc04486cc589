"""Pooling a cross-validation: out-of-fold predictions of every breast, and their metrics.

The headline is the pooled out-of-fold AUC (every breast scored by the one model that never saw it;
averaged over repeats) with a patient-level bootstrap interval, beside the AUC of each fold (mean and
sd), the clinical-only logistic regression fitted in the same folds, and the paired difference. The
threshold metrics call each breast at the threshold its own fold chose on validation.

Each fold model scores on a probability scale of its own (another epoch chosen, another balancing), and a
pooled AUC ranks breasts of different folds against each other: one fold whose scores sit lower drags it
below every fold's own AUC (Forman & Scholz 2010; Airola et al. 2011). So the pooled AUC ranks `score`: the
fold's logit standardised by the mean and sd of its validation breasts' logits (training folds, no label
read), which puts every fold on one scale and leaves each fold's ranking as it is. The AUC of the
probabilities as scored is kept beside it; calibration, Brier and the threshold calls use the probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammofuse.config import setting, settings_text
from mammofuse.evaluation import metrics, plots
from mammofuse.evaluation.evaluate import kept_early
from mammofuse.evaluation.result import BASELINE, CvEvaluation, OperatingPoint, PooledMetrics
from mammofuse.problems import DataError
from mammofuse.runs import Run
from mammofuse.storage import write_table

SCORE_OF = {"probability": "score", "clinical_probability": "clinical_score"}  # what the pooled AUC ranks


def out_of_fold(run: Run, folds: int, repeats: int) -> pd.DataFrame:
    """Every fold's held-out predictions with the fold's validation-chosen thresholds and their rule."""
    parts = []
    for repeat in range(repeats):
        for fold in range(folds):
            fold_run = run.fold(repeat, fold)
            result = fold_run.read_evaluation()
            every = fold_run.read_predictions()
            val, pred = every[every["split"] == "val"], every[every["split"] == "test"]
            keys = pred["key"].str.split("/", n=1, expand=True)
            part = pd.DataFrame(
                {
                    "patient_id": keys[0],
                    "side": keys[1],
                    "label": pred["label"].to_numpy(),
                    "repeat": repeat,
                    "fold": fold,
                    "probability": pred["probability"].to_numpy(),
                    "clinical_probability": pred.get("baseline_probability", np.nan),
                    "score": standardised(pred["probability"], val["probability"]),
                    "clinical_score": standardised(
                        pred.get("baseline_probability"), val.get("baseline_probability")
                    ),
                    "threshold": result.model.threshold,
                    "clinical_threshold": result.baseline.threshold if result.baseline else np.nan,
                    "operating_point": str(result.operating_point),
                }
            )
            parts.append(part)
    return pd.concat(parts, ignore_index=True)


def standardised(held_out: pd.Series | None, val: pd.Series | None) -> np.ndarray | float:
    """A fold's held-out logits on the common scale: minus the mean, over the sd, of its validation
    breasts' logits (NaN where the fold has no such scores: a run without the clinical baseline; a
    validation part too small for an sd only shifts them)."""
    if held_out is None or val is None or held_out.isna().any() or val.isna().any():
        return np.nan
    reference = metrics.logit(val.to_numpy(float)) if len(val) else np.zeros(1)
    sd = reference.std(ddof=1) if len(reference) > 1 else 0.0
    return (metrics.logit(held_out.to_numpy(float)) - reference.mean()) / (sd if sd > 0 else 1.0)


def _pooled(
    oof: pd.DataFrame,
    labels,
    groups,
    wide: pd.DataFrame,
    column: str,
    threshold: str,
    train_aucs: list[float | None],
) -> PooledMetrics:
    score = SCORE_OF[column]
    fold_aucs = [metrics.auc(g["label"], g[column]) for _, g in oof.groupby(["repeat", "fold"])]
    first = oof[oof["repeat"] == 0]  # each breast once: intervals by the patient bootstrap
    y, patients = first["label"].to_numpy(), first["patient_id"].to_numpy()
    return PooledMetrics.model_validate(
        {
            "auc": metrics.auc_with_ci(labels, wide[score].to_numpy().T, groups),
            "auc_as_scored": metrics.auc_with_ci(labels, wide[column].to_numpy().T, groups),
            "fold_aucs": fold_aucs,
            "brier": metrics.brier(oof["label"], oof[column]),
            "at_threshold": metrics.at_threshold(oof["label"], oof[column], oof[threshold]),
            "at_threshold_ci": metrics.rates_with_ci(y, first[column], first[threshold], patients),
            "calibration": metrics.calibration_with_ci(y, first[column].to_numpy(), patients),
            "fold_train_aucs": None if None in train_aucs else train_aucs,
        }
    )


def early_folds(folds: list[Run]) -> str | None:
    """A warning where folds kept an early epoch by their validation AUC (`evaluate.kept_early`)."""
    early = sum(kept_early(f.read_epochs(), f.read_config().train.checkpoint) is not None for f in folds)
    if not early:
        return None
    return (
        f"{early} of {len(folds)} folds kept an early epoch by their validation AUC (each fold's "
        "warnings say which): their models were barely trained, and the pooled AUC is partly theirs; "
        "train.checkpoint = 'last' keeps every fold's last epoch"
    )


def pool_folds(run: Run, folds: int, repeats: int) -> CvEvaluation:
    """Write the run's oof.csv and metrics.json (a `CvEvaluation`) from its finished folds."""
    oof = out_of_fold(run, folds, repeats)
    points = sorted(set(oof["operating_point"]))
    if len(points) != 1:  # run_cv evaluates every fold with one; a fold evaluated by hand may differ
        raise DataError(
            f"{run.dir}: the folds chose their thresholds by different rules ({', '.join(points)}); run "
            "`mammofuse cv` again with the --operating-point to use"
        )
    write_table(oof, run.oof)
    # one row per breast, one column per repeat: every breast is scored once in every repeat
    wide = oof.pivot_table(index=["patient_id", "side", "label"], columns="repeat", aggfunc="first")
    index = wide.index.to_frame(index=False)
    labels, groups = index["label"].to_numpy(), index["patient_id"].to_numpy()
    model_scores = wide["score"].to_numpy().T  # (repeats, breasts)
    fold_runs = [run.fold(r, k) for r in range(repeats) for k in range(folds)]
    evaluations = [f.read_evaluation() for f in fold_runs]
    apparent = [e.model.train_auc for e in evaluations]
    point, model = (
        OperatingPoint.parse(points[0]),
        _pooled(oof, labels, groups, wide, "probability", "threshold", apparent),
    )
    result = {
        "run": str(run.dir),
        "folds": folds,
        "repeats": repeats,
        "breasts": len(index),
        "positives": int(labels.sum()),
        "patients": int(index["patient_id"].nunique()),
        "operating_point": point,
        "model": model,
    }
    if oof["clinical_score"].notna().all():
        clinical_scores = wide["clinical_score"].to_numpy().T
        apparent = [e.baseline.train_auc if e.baseline else None for e in evaluations]
        result["baseline"] = _pooled(
            oof, labels, groups, wide, "clinical_probability", "clinical_threshold", apparent
        )
        result["comparison"] = metrics.paired_auc_difference(labels, model_scores, clinical_scores, groups)
    warnings = [
        metrics.small_sample_warning(int(labels.sum()), int((labels == 0).sum()), "the cohort"),
        metrics.target_missed(point, model.at_threshold.model_dump(), model.at_threshold_ci, "out of fold"),
        early_folds(fold_runs),
    ]
    result["warnings"] = [w for w in warnings if w]
    evaluation = CvEvaluation.model_validate(result)
    run.write_cv_evaluation(evaluation)
    _figures(run, evaluation, oof)
    return evaluation


def _figures(run: Run, result: CvEvaluation, oof: pd.DataFrame) -> None:
    """ROC and calibration of the out-of-fold predictions (first repeat), and train vs validation AUC
    per epoch of every fold."""
    first = oof[oof["repeat"] == 0]
    y = first["label"].to_numpy()
    curves = {result.model_name: (y, first["probability"].to_numpy())}
    ranked = {result.model_name: (y, first["score"].to_numpy())}  # the ROC of the headline AUC
    aucs = {result.model_name: result.model.auc.text}
    if result.baseline is not None:
        curves[BASELINE] = (y, first["clinical_probability"].to_numpy())
        ranked[BASELINE] = (y, first["clinical_score"].to_numpy())
        aucs[BASELINE] = result.baseline.auc.text
    run.figures.mkdir(exist_ok=True)
    patients = first["patient_id"].to_numpy()
    figures = {
        "roc": plots.roc_figure(ranked, aucs, where="out of fold, folds on one scale"),
        "calibration": plots.calibration_figure(curves, where="out of fold", groups=patients),
        "decision": plots.decision_figure(curves, where="out of fold", groups=patients),
        "overfitting": plots.overfitting_figure({run.name: fold_epochs(run, result)}),
    }
    for name, fig in figures.items():
        fig.savefig(run.figures / f"{name}.png", dpi=110)


def fold_epochs(run: Run, result: CvEvaluation) -> list[pd.DataFrame]:
    """The epoch log of every fold that has one (the overfitting picture)."""
    logs = [run.fold(r, k).read_epochs() for r in range(result.repeats) for k in range(result.folds)]
    return [log for log in logs if log is not None]


def fold_table(run: Run, result: CvEvaluation) -> pd.DataFrame:
    """One row per fold: its held-out breasts, AUCs and validation-chosen threshold; numbered from 1, as
    Table 1 and the flow number them, beside the fold's run folder."""
    oof = run.read_oof()
    tuned = list(run.read_tuning()["space"]) if run.tuning.is_file() else []
    apparent = result.model.fold_train_aucs  # pooled in this order: repeat by repeat, fold by fold
    rows = []
    for i, ((repeat, fold), g) in enumerate(oof.groupby(["repeat", "fold"])):
        rows.append(
            {
                "repeat": int(repeat) + 1,
                "fold": int(fold) + 1,
                "run folder": run.fold(int(repeat), int(fold)).dir.relative_to(run.dir).as_posix(),
                "breasts": len(g),
                "positive": int(g["label"].sum()),
                "AUC": f"{metrics.auc(g['label'], g['probability']):.3f}",
                "clinical-only AUC": f"{metrics.auc(g['label'], g['clinical_probability']):.3f}"
                if result.baseline is not None
                else "",
                "threshold": f"{g['threshold'].iloc[0]:.3f}",
                "apparent AUC": "" if apparent is None else f"{apparent[i]:.3f}",
            }
        )
        if tuned:  # nested cross-validation: what the fold chose
            chosen = run.fold(int(repeat), int(fold)).read_config()
            rows[-1]["settings chosen"] = settings_text({key: setting(chosen, key) for key in tuned})
    return pd.DataFrame(rows)
