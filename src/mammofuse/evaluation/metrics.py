"""Metrics as plain functions on arrays (labels 0/1, probabilities of label 1).

Intervals are percentile bootstraps over breasts, stratified by label so every resample keeps the
study's class balance (Efron & Tibshirani 1993); model comparisons are paired bootstraps on the same
resamples.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score, roc_curve

N_BOOTSTRAP = 2000


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present (it is undefined then)."""
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else float("nan")


def stratified_resamples(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, N) indices: each row resamples positives and negatives separately, with replacement."""
    labels = np.asarray(labels)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    return np.concatenate(
        [pos[rng.integers(0, len(pos), (n, len(pos)))], neg[rng.integers(0, len(neg), (n, len(neg)))]], axis=1
    )


def _fast_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC for each row of (n, N) resampled labels and scores (Mann-Whitney U with mid-ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    return (np.where(labels == 1, ranks, 0).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auc_with_ci(
    labels: np.ndarray, probs: np.ndarray, n: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """AUC and its stratified-bootstrap percentile interval."""
    labels, probs = np.asarray(labels), np.asarray(probs)
    idx = stratified_resamples(labels, n, np.random.default_rng(seed))
    boot = _fast_auc(labels[idx], probs[idx])
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"auc": auc(labels, probs), "low": float(lo), "high": float(hi), "n_bootstrap": n}


def paired_auc_difference(
    labels: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = N_BOOTSTRAP, seed: int = 0
) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same breasts: difference, 95 % interval, two-sided bootstrap p-value."""
    labels = np.asarray(labels)
    idx = stratified_resamples(labels, n, np.random.default_rng(seed))
    diff = _fast_auc(labels[idx], np.asarray(a)[idx]) - _fast_auc(labels[idx], np.asarray(b)[idx])
    lo, hi = np.quantile(diff, [0.025, 0.975])
    p = min(1.0, 2 * min(np.mean(diff <= 0), np.mean(diff >= 0)))
    return {
        "difference": auc(labels, a) - auc(labels, b),
        "low": float(lo),
        "high": float(hi),
        "p_value": float(p),
    }


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (chosen on validation, applied to test)."""
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def at_threshold(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, object]:
    """Accuracy, sensitivity, specificity, PPV, NPV and the confusion matrix at `threshold`."""
    labels = np.asarray(labels)
    pred = (np.asarray(probs) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[0, 1]).ravel()

    def ratio(a: int, b: int) -> float:
        return float(a / b) if b else float("nan")

    return {
        "threshold": float(threshold),
        "accuracy": ratio(tp + tn, len(labels)),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(brier_score_loss(labels, probs))


def summary(labels: np.ndarray, probs: np.ndarray, threshold: float, seed: int = 0) -> dict[str, object]:
    """Every headline figure of one model on one split."""
    return {
        "n": int(len(labels)),
        "positives": int(np.sum(labels)),
        "auc": auc_with_ci(labels, probs, seed=seed),
        "brier": brier(labels, probs),
        "at_0.5": at_threshold(labels, probs, 0.5),
        "at_youden": at_threshold(labels, probs, threshold),
    }


def ci_text(auc_ci: dict[str, float]) -> str:
    """'0.812 [0.712, 0.905]' from an `auc_with_ci` result."""
    return f"{auc_ci['auc']:.3f} [{auc_ci['low']:.3f}, {auc_ci['high']:.3f}]"
