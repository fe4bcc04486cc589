"""Patient-grouped, label-stratified splits: no patient's breasts are ever in two sets.

Holdout (the study): test = test_fraction of the breasts, validation = val_fraction of the rest, each
class within one patient of its share. Temporal holdout (`split.method = "temporal"`): test = the patients
examined last, by their exams' StudyDate (a nonrandom split by time, TRIPOD type 2b: closer to how a model
meets the next patients than a random split), validation random from the rest. Cross-validation: k folds
(scikit-learn's StratifiedGroupKFold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammofuse.config import SplitConfig
from mammofuse.domain import LABEL_DATE, VIEWS
from mammofuse.problems import DataError

TRAIN, VAL, TEST = "train", "val", "test"


def held_out(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a held-out part: `fraction` of the breasts of each class, whole patients only.

    Patients are visited in a seeded random order and taken while neither class goes past its target
    (fraction x its count, rounded), so each class ends within one patient's breasts of its target.
    scikit-learn's grouped splitters cannot do this: StratifiedGroupKFold gives 1/k parts only (0.3 would
    become a third) and GroupShuffleSplit counts patients, not breasts, and does not stratify.
    """
    patients, inverse = np.unique(groups, return_inverse=True)
    if len(patients) < max(2, round(1 / fraction)):
        raise DataError(f"only {len(patients)} patients: too few for a {fraction:.0%} split")
    counts = np.stack(
        [np.bincount(inverse, weights=labels == c, minlength=len(patients)) for c in (0, 1)], axis=1
    )  # (patients, 2): negatives and positives of each patient
    target = np.round(fraction * counts.sum(axis=0))
    taken = np.zeros(len(patients), bool)
    have = np.zeros(2)
    for i in np.random.default_rng(seed).permutation(len(patients)):
        if np.all(have + counts[i] <= target):
            taken[i] = True
            have += counts[i]
    if not taken.any() or taken.all():
        raise DataError(f"only {len(patients)} patients: too few for a {fraction:.0%} split")
    return taken[inverse]


def breast_dates(table: pd.DataFrame, source: str = "exam") -> pd.Series:
    """Each breast's date (NaT where it has none): by `source` "exam", the later of its CC's and MLO's
    StudyDate; by "label", its label's date (ingest keeps labels.date_column's as `label_date`)."""
    if source == "label" and LABEL_DATE not in table:
        raise DataError(
            "split.date = 'label' needs the labels' dates: set labels.date_column and run ingest again"
        )
    columns = [LABEL_DATE] if source == "label" else [v.column("exam_date") for v in VIEWS]
    dates = [
        pd.to_datetime(table[c].astype("string").str.removesuffix(".0"), format="%Y%m%d", errors="coerce")
        for c in columns
        if c in table
    ]
    if not dates:
        return pd.Series(pd.NaT, index=table.index, dtype="datetime64[ns]")
    return pd.concat(dates, axis=1).max(axis=1)


def latest(dates: pd.Series, groups: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the breasts of the patients examined last (each patient by their latest exam; ties by
    patient ID), whole patients, until `fraction` of the breasts; a patient without a date is never taken."""
    breasts = pd.DataFrame({"patient": groups, "date": dates.to_numpy()})
    per_patient = breasts.groupby("patient")["date"].max().dropna()
    if per_patient.empty:
        raise DataError(
            "split.method = 'temporal' needs dates, and no breast has one (split.date: the images' StudyDate "
            "or the labels' date column): use 'random'"
        )
    if per_patient.nunique() < 2:
        raise DataError(
            f"split.method = 'temporal': every dated exam is of {per_patient.iloc[0]:%Y-%m-%d}, so time "
            "cannot split them (a de-identified export often replaces the dates with one): use 'random'"
        )
    order = per_patient.reset_index().sort_values(["date", "patient"], ascending=False)["patient"]
    count = breasts["patient"].value_counts()
    target, taken, have = round(fraction * len(groups)), [], 0
    for patient in order:
        if have >= target:
            break
        taken.append(patient)
        have += int(count[patient])
    return np.isin(groups, taken)


def make_splits(table: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """patient_id, side, label, and `split` (train/val/test) or `fold` (0..k-1) for every breast."""
    out = table[["patient_id", "side", "label"]].copy().reset_index(drop=True)
    labels, groups = out["label"].to_numpy(), out["patient_id"].to_numpy()
    if cfg.folds:
        if out["patient_id"].nunique() < cfg.folds:
            raise DataError(f"only {out['patient_id'].nunique()} patients: too few for {cfg.folds} folds")
        folds = StratifiedGroupKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
        out["fold"] = -1
        for k, (_, held) in enumerate(folds.split(np.zeros(len(out)), labels, groups)):
            out.loc[held, "fold"] = k
        return out
    if cfg.method == "temporal":
        test = latest(breast_dates(table, cfg.dated_by).reset_index(drop=True), groups, cfg.test_fraction)
    else:
        test = held_out(labels, groups, cfg.test_fraction, cfg.seed)
    rest = np.flatnonzero(~test)
    val_in_rest = held_out(labels[rest], groups[rest], cfg.val_fraction, cfg.seed + 1)
    out["split"] = TRAIN
    out.loc[test, "split"] = TEST
    out.loc[rest[val_in_rest], "split"] = VAL
    for part, labels_in_part in out.groupby("split")["label"]:
        if labels_in_part.nunique() < 2:
            missing = "positive" if labels_in_part.iloc[0] == 0 else "negative"
            raise DataError(
                f"the {part} split of {len(labels_in_part)} breasts has no {missing} breast: no AUC or "
                f"threshold can come from it (the cohort has {int(out['label'].sum())} positive of "
                f"{len(out)}); check the labels, or use cross-validation (mammofuse cv)"
            )
    return out


def check_fold_count(table: pd.DataFrame, folds: int) -> None:
    """A DataError unless each class has a patient for each of `folds` folds to hold out."""
    per_class = table.groupby("label")["patient_id"].nunique()
    if len(per_class) < 2 or per_class.min() < folds:
        raise DataError(
            f"{folds} folds need at least {folds} patients of each class; found "
            + ", ".join(f"{n} with label {c}" for c, n in per_class.items())
        )


def make_folds(table: pd.DataFrame, folds: int, repeats: int, seed: int) -> pd.DataFrame:
    """Repeated patient-grouped, label-stratified k folds: one row per breast and repeat with columns
    patient_id, side, label, repeat, fold (repeat r is shuffled with seed + r)."""
    check_fold_count(table, folds)
    base = table[["patient_id", "side", "label"]].reset_index(drop=True)
    labels, groups = base["label"].to_numpy(), base["patient_id"].to_numpy()
    parts = []
    for r in range(repeats):
        part = base.assign(repeat=r, fold=-1)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed + r)
        for k, (_, held) in enumerate(splitter.split(np.zeros(len(base)), labels, groups)):
            part.loc[held, "fold"] = k
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def fold_splits(folds: pd.DataFrame, repeat: int, fold: int, val_fraction: float, seed: int) -> pd.DataFrame:
    """One fold as a train/val/test split: the held-out fold is `test` (scored once), and a patient-grouped
    `val_fraction` of the rest picks the checkpoint and the threshold."""
    out = folds[folds["repeat"] == repeat][["patient_id", "side", "label", "fold"]].reset_index(drop=True)
    test = (out["fold"] == fold).to_numpy()
    rest = np.flatnonzero(~test)
    val = held_out(
        out["label"].to_numpy()[rest],
        out["patient_id"].to_numpy()[rest],
        val_fraction,
        seed + 1000 * repeat + fold,
    )
    out["split"] = TRAIN
    out.loc[test, "split"] = TEST
    out.loc[rest[val], "split"] = VAL
    return out.drop(columns="fold")


def thin_training(splits: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """`splits` with only `fraction` of the training patients (validation and test whole): the training
    patients are grouped by their breasts' labels (one negative, one positive, two negatives, one of each,
    ...), and the first `fraction` of each group (rounded, at least one) taken in an order drawn with
    `seed`. The order does not depend on `fraction`, so every share keeps the patients of every smaller
    one (a learning curve's points differ by data added, not by another draw), and each label keeps its
    share of the breasts within a patient of it."""
    if fraction >= 1:
        return splits
    train = splits[splits["split"] == TRAIN]
    mix = train.groupby("patient_id")["label"].agg(lambda labels: tuple(sorted(labels)))
    drawn = mix.iloc[np.random.default_rng(seed).permutation(len(mix))]
    kept = [
        patient
        for _, group in drawn.groupby(drawn, sort=False)
        for patient in group.index[: max(1, round(fraction * len(group)))]
    ]
    return splits[(splits["split"] != TRAIN) | splits["patient_id"].isin(kept)].reset_index(drop=True)


def split_table(splits: pd.DataFrame, dates: pd.Series | None = None) -> pd.DataFrame:
    """Positives and negatives per split, like the study's table; with `dates` (each breast's exam date,
    in `splits`' order), the first and last exam of each split too."""
    column = "split" if "split" in splits else "fold"
    counts = splits.groupby(column)["label"].agg(breasts="size", positive="sum")
    counts["negative"] = counts["breasts"] - counts["positive"]
    counts["patients"] = splits.groupby(column)["patient_id"].nunique()
    if dates is not None and dates.notna().any():
        by_split = pd.Series(dates.to_numpy()).groupby(splits[column].to_numpy())
        counts["exams"] = (
            by_split.min().dt.strftime("%Y-%m-%d") + " to " + by_split.max().dt.strftime("%Y-%m-%d")
        )
        counts["exams"] = counts["exams"].fillna("no date")
    return counts
