"""Patient-grouped, label-stratified splits: no patient's breasts are ever in two sets.

Holdout (the study): test = test_fraction of patients, validation = val_fraction of the rest.
Cross-validation: k folds. Built on scikit-learn's StratifiedGroupKFold, seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammofuse.config import SplitConfig
from mammofuse.problems import DataError

TRAIN, VAL, TEST = "train", "val", "test"


def _one_fold(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a held-out part of about `fraction` of the rows, grouped and stratified."""
    n_splits = max(2, round(1 / fraction))
    if len(np.unique(groups)) < n_splits:
        raise DataError(f"only {len(np.unique(groups))} patients: too few for a {fraction:.0%} split")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return mask


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
    test = _one_fold(labels, groups, cfg.test_fraction, cfg.seed)
    rest = np.flatnonzero(~test)
    val_in_rest = _one_fold(labels[rest], groups[rest], cfg.val_fraction, cfg.seed + 1)
    out["split"] = TRAIN
    out.loc[test, "split"] = TEST
    out.loc[rest[val_in_rest], "split"] = VAL
    return out


def split_table(splits: pd.DataFrame) -> pd.DataFrame:
    """Positives and negatives per split, like the study's table."""
    column = "split" if "split" in splits else "fold"
    counts = splits.groupby(column)["label"].agg(breasts="size", positive="sum")
    counts["negative"] = counts["breasts"] - counts["positive"]
    counts["patients"] = splits.groupby(column)["patient_id"].nunique()
    return counts
