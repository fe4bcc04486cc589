"""`mammofuse cv`: repeated patient-grouped k-fold cross-validation, every fold a resumable run.

The folds are made from the work folder's preprocessed table with the cohort's split seed, so every
preset cross-validated on a work folder sees identical folds (what `compare` pairs on). Inside a fold,
a patient-grouped validation part of the training folds picks the checkpoint and the threshold; the
held-out fold is scored once. A finished fold (its metrics.json written) is never retrained (asked for
another operating point, it is evaluated again: the thresholds are chosen anew, nothing is trained); an
interrupted one resumes from its last checkpoint. Nested (`--tune`): each fold first tunes its settings
with a study of its own on its training folds (the held-out fold removed), then trains with the best.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mammofuse.config import Config
from mammofuse.data.splits import fold_splits, make_folds, thin_training
from mammofuse.evaluation.cv import pool_folds
from mammofuse.evaluation.evaluate import evaluate_run, write_baseline
from mammofuse.evaluation.result import CvEvaluation, OperatingPoint
from mammofuse.problems import DataError
from mammofuse.runs import Run, Work, read_table
from mammofuse.storage import write_table
from mammofuse.training.run import check_same_data, fit, preprocessed_for, run_data
from mammofuse.ui import console

if TYPE_CHECKING:
    from mammofuse.tuning.tune import Tuning

DEFAULT_FOLDS = 5


def cv_config(cfg: Config, folds: int | None, repeats: int | None) -> Config:
    """The config with the fold count and repeats this cross-validation uses (command line, else [split],
    else 5 folds, 1 repeat)."""
    out = cfg.model_copy(deep=True)
    out.split.folds = folds or cfg.split.folds or DEFAULT_FOLDS
    out.split.repeats = repeats or cfg.split.repeats
    return out


def assign_folds(cfg: Config, run: Run) -> pd.DataFrame:
    """The fold of every breast in every repeat, written to the run (a resumed run must match it)."""
    work = Work(cfg.work_dir)
    work.check_cohort(cfg, ("images", "labels", "clinical"))
    folds = make_folds(work.read_preprocessed(), cfg.split.folds, cfg.split.repeats, cfg.split.seed)
    if run.folds.is_file():
        try:
            before = read_table(run.folds, "cv", ("patient_id", "side", "repeat", "fold"))
        except DataError:  # the folds follow from the cohort and the settings, and each fold checks its data
            console.print(
                f"[yellow]warning:[/] {run.folds}: cannot be read (damaged since?): written anew from the "
                "cohort and the split settings; each fold's run checks its breasts against them"
            )
            before = folds
        if not before.equals(folds):
            raise DataError(
                f"{run.dir} was started with other folds (another fold count, repeats, seed or cohort); "
                "give this cross-validation another --run name, or delete that folder to start over"
            )
    run.dir.mkdir(parents=True, exist_ok=True)
    write_table(folds, run.folds)
    return folds


def record_tuning(run: Run, tuning: Tuning | None) -> None:
    """Write down how the folds are tuned (nested cross-validation); refuse to go on with a run folder
    started otherwise (plain, or tuned with other trials or another search space)."""
    now = tuning.describe() if tuning else None
    before = now  # a new run folder
    if run.tuning.is_file():
        before = run.read_tuning()
    elif run.folds.is_file():
        before = None  # a plain cross-validation was started there
    if before != now:

        def said(t: dict | None) -> str:
            if t is None:
                return "a plain cross-validation"
            return f"a nested cross-validation ({t['trials']} trials per fold over {', '.join(t['space'])})"

        raise DataError(
            f"{run.dir} was started as {said(before)}, not as {said(now)}; give this one another --run "
            "name, or delete that folder to start over"
        )
    if now is not None:
        run.write_tuning(now)


def run_cv(
    cfg: Config, run_dir: Path, tuning: Tuning | None = None, point: OperatingPoint | None = None
) -> CvEvaluation:
    """Train and evaluate every fold that is not finished yet, then pool the out-of-fold predictions.
    With `tuning` (nested cross-validation), each fold first tunes its settings on its training folds.
    `point`: how each fold chooses its thresholds on its validation part (Youden's J when not given)."""
    point = point or OperatingPoint()
    run = Run(run_dir)
    run.check_config(cfg)
    record_tuning(run, tuning)
    folds = assign_folds(cfg, run)
    run.write_config(cfg)
    manifest, info = Work(cfg.work_dir).read_manifest()
    table = preprocessed_for(cfg, manifest, run)  # once for every fold, its problems reported once
    k, r = cfg.split.folds, cfg.split.repeats
    for repeat in range(r):
        for fold in range(k):
            fold_run = run.fold(repeat, fold)
            title = f"repeat {repeat + 1}/{r}, fold {fold + 1}/{k}"
            splits = fold_splits(folds, repeat, fold, cfg.split.val_fraction, cfg.split.seed)
            splits = thin_training(splits, cfg.data.train_fraction, cfg.split.seed)  # a learning curve
            if fold_run.metrics.is_file():
                check_same_data(fold_run, run_data(table, splits), info)  # its predictions are pooled
                evaluation = fold_run.read_evaluation()
                if evaluation.operating_point != point or evaluation.model.train_auc is None:
                    why = (
                        f"its thresholds chosen again ({point.text})"
                        if evaluation.operating_point != point
                        else "evaluated again to measure its apparent AUC"
                    )
                    console.print(f"{title}: finished before; {why}")
                    evaluate_run(fold_run.dir, point)
                    continue
                if not fold_run.baseline.is_file():  # evaluated before runs kept it: the bundle needs it
                    write_baseline(fold_run, point)
                console.print(f"{title}: finished before, kept ({fold_run.dir})")
                continue
            console.rule(title)
            fold_cfg = cfg
            if tuning is not None:
                from mammofuse.tuning.tune import tune_fold

                fold_cfg = tune_fold(cfg, fold_run, splits, table, tuning)
                console.rule(f"{title}: the chosen settings on the fold's training folds")
            fit(fold_cfg, fold_run, splits, table)
            evaluate_run(fold_run.dir, point)
    return pool_folds(run, k, r)
