"""Metrics as plain functions on arrays (labels 0/1, probabilities of label 1, patient of each breast).

Intervals are percentile bootstraps over patients: a resample draws patients with replacement and keeps
all their breasts (the cluster bootstrap; Field & Welsh 2007), since a patient's two breasts are not
independent. Patients are drawn separately among those with and without a positive breast, so every
resample keeps the study's class balance (Efron & Tibshirani 1993). Model comparisons are paired: both
models are scored on the same resamples. A resample is a weight per breast (how often its patient was
drawn), so the AUCs of 2,000 resamples are one vectorised weighted Mann-Whitney computation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import binomtest
from sklearn.metrics import brier_score_loss, confusion_matrix, roc_auc_score, roc_curve

from mammofuse.evaluation.result import OperatingPoint

N_BOOTSTRAP = 2000
SMALL_CLASS = 20  # fewer positives or negatives than this: intervals are wide and unstable
# Fewer positives or negatives than this: no interval at all. A bootstrap of a handful is degenerate: three
# negatives ranked below five positives give AUC 1 in every resample, an interval [1, 1] claiming certainty.
FEWEST_FOR_INTERVAL = 5


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present (it is undefined then)."""
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else float("nan")


def patient_weights(
    labels: np.ndarray, groups: np.ndarray | None, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, N) bootstrap weights: row r gives each breast the number of times its patient was drawn in
    resample r. Patients with a positive breast and the others are resampled separately (stratified).
    `groups=None` treats every breast as its own patient."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    patients, inverse = np.unique(groups, return_inverse=True)
    has_positive = np.bincount(inverse, weights=labels == 1, minlength=len(patients)) > 0
    counts = np.zeros((n, len(patients)))
    for stratum in (has_positive, ~has_positive):
        members = np.flatnonzero(stratum)
        if len(members):
            draws = members[rng.integers(0, len(members), (n, len(members)))]  # (n, m) patient indices
            flat = (draws + len(patients) * np.arange(n)[:, None]).ravel()
            counts += np.bincount(flat, minlength=n * len(patients)).reshape(n, len(patients))
    return counts[:, inverse]


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC for each row of (n, N) breast weights: the weighted Mann-Whitney statistic, ties counted half.
    With all weights 1 it is the ordinary AUC."""
    order = np.argsort(scores, kind="stable")
    s, y, w = np.asarray(scores)[order], np.asarray(labels)[order], np.atleast_2d(weights)[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first breast of each distinct score
    pos = np.add.reduceat(w * (y == 1), starts, axis=1)  # (n, distinct scores)
    neg = np.add.reduceat(w * (y == 0), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score
    return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def average_precision(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> Any:
    """Average precision, the area under the precision-recall steps (sklearn's, not interpolated): the
    precision at each distinct score, weighted by the positives it adds. With (n, N) bootstrap weights,
    one per resample (an array); without, a float. Its value when scores are random is the prevalence."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    s, y = np.asarray(scores)[order], np.asarray(labels)[order]
    w = np.atleast_2d(np.ones(len(s)) if weights is None else weights)[:, order]
    ends = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last breast of each distinct score
    tp = np.cumsum(w * (y == 1), axis=1)[:, ends]
    seen = np.cumsum(w, axis=1)[:, ends]
    gained = np.diff(tp, axis=1, prepend=0)  # positive weight each threshold adds
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (gained * np.where(seen > 0, tp / seen, 0)).sum(axis=1) / tp[:, -1]
    return ap if weights is not None else float(ap[0])


def average_precision_with_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | None = None,
    n: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Average precision and its 95 % patient-bootstrap interval (NaN with too few breasts of a class)."""
    labels = np.asarray(labels)
    lo = hi = float("nan")
    if not too_few_for_interval(labels):
        weights = patient_weights(labels, groups, n, np.random.default_rng(seed))
        lo, hi = np.quantile(average_precision(labels, probs, weights), [0.025, 0.975])
    return average_precision(labels, probs), float(lo), float(hi)


def _repeats(probs: np.ndarray) -> np.ndarray:
    """(R, N): the scores of R repeats (cross-validation repeats score every breast once each)."""
    return np.atleast_2d(np.asarray(probs, dtype=float))


def mean_auc(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """The AUC averaged over repeats; with (n, N) bootstrap weights, one such mean per resample."""
    if weights is None:
        return float(np.mean([auc(labels, p) for p in _repeats(probs)]))
    return np.mean([weighted_auc(labels, p, weights) for p in _repeats(probs)], axis=0)


def auc_with_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | None = None,
    n: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, object]:
    """AUC and its patient-level stratified bootstrap percentile interval. `probs` may be (R, N): R
    repeats of out-of-fold scores of the same breasts, whose AUCs are averaged (in every resample too).
    With fewer than FEWEST_FOR_INTERVAL breasts of a class the interval is NaN: none is given."""
    labels = np.asarray(labels)
    lo = hi = float("nan")
    if not too_few_for_interval(labels):
        boot = mean_auc(labels, probs, patient_weights(labels, groups, n, np.random.default_rng(seed)))
        lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    unit = "breast" if groups is None else "patient"
    return {
        "auc": mean_auc(labels, probs),
        "low": float(lo),
        "high": float(hi),
        "n_bootstrap": n,
        "unit": unit,
    }


def paired_auc_difference(
    labels: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray | None = None,
    n: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same breasts: difference, 95 % interval, two-sided bootstrap p-value
    (`a` and `b` may be (R, N) repeats, as in `auc_with_ci`)."""
    return paired_auc_contrast(labels, [(1.0, a), (-1.0, b)], groups, n, seed)


def paired_auc_contrast(
    labels: np.ndarray,
    terms: Sequence[tuple[float, np.ndarray]],
    groups: np.ndarray | None = None,
    n: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, float]:
    """A weighted sum of AUCs of score sets on the same breasts (e.g. +1, -1: a difference; +1, -1, -1, +1:
    how a difference changed), with its 95 % interval and two-sided p-value from one patient bootstrap: every
    AUC is recomputed on the same resamples.

    p counts the resamples on the far side of zero, plus one (Davison & Hinkley 1997, eq. 4.11), so it
    is never reported as 0: with 2,000 resamples the smallest p is about 0.001. With fewer than
    FEWEST_FOR_INTERVAL breasts of a class, interval and p are NaN: none is given."""
    labels = np.asarray(labels)
    estimate = sum(weight * float(mean_auc(labels, scores)) for weight, scores in terms)
    if too_few_for_interval(labels):
        return {"difference": estimate, "low": float("nan"), "high": float("nan"), "p_value": float("nan")}
    weights = patient_weights(labels, groups, n, np.random.default_rng(seed))
    boot = sum(weight * np.asarray(mean_auc(labels, scores, weights)) for weight, scores in terms)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    tail = min(int(np.sum(boot <= 0)), int(np.sum(boot >= 0)))
    return {
        "difference": float(estimate),
        "low": float(lo),
        "high": float(hi),
        "p_value": min(1.0, 2 * (tail + 1) / (n + 1)),
    }


def too_few_for_interval(labels: np.ndarray) -> bool:
    """Whether a class has fewer than FEWEST_FOR_INTERVAL breasts: too few for a bootstrap interval."""
    positives = int(np.sum(np.asarray(labels) == 1))
    return min(positives, len(labels) - positives) < FEWEST_FOR_INTERVAL


def small_sample_warning(positives: int, negatives: int, where: str = "the test part") -> str | None:
    """A warning when a class is too small for a stable AUC interval (or for any), else None."""
    if min(positives, negatives) >= SMALL_CLASS:
        return None
    counts = f"{where} has {positives} positive and {negatives} negative breasts"
    if min(positives, negatives) < FEWEST_FOR_INTERVAL:
        return (
            f"{counts} (fewer than {FEWEST_FOR_INTERVAL} in a class): its AUCs are given without an interval "
            "(a bootstrap of so few is degenerate) and mean little"
        )
    return f"{counts} (fewer than {SMALL_CLASS} in a class): its AUC interval is wide and may be unstable"


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (chosen on validation, applied to test)."""
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs)
    best = int(np.argmax(tpr - fpr))
    return float(min(1.0, thresholds[best]))


def choose_threshold(labels: np.ndarray, probs: np.ndarray, point: OperatingPoint) -> float:
    """The threshold `point` chooses on these (validation) breasts; a breast is called positive at
    probability >= threshold. With a target, the highest threshold whose sensitivity reaches it, or the
    lowest whose specificity does (0.5 where the breasts have one class, as for Youden)."""
    if point.target is None:
        return youden_threshold(labels, probs)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)  # thresholds descending
    if point.rule == "sensitivity":
        best = int(np.argmax(tpr >= point.target - 1e-12))  # the first (highest) that reaches it
    else:
        best = int(np.flatnonzero(fpr <= 1 - point.target + 1e-12)[-1])  # the last (lowest) that keeps it
    return float(min(1.0, thresholds[best]))


TARGET_SPREAD = 0.2  # wider than this, the exact interval of the rate a target was reached with is warned


def chosen_on_few(
    labels: np.ndarray, probs: np.ndarray, threshold: float, point: OperatingPoint
) -> str | None:
    """A warning where a target rate was reached on too few breasts to hold elsewhere: the exact 95 %
    interval of the rate the threshold gave on the breasts that chose it is wider than TARGET_SPREAD."""
    if point.target is None:
        return None
    y, call = np.asarray(labels) == 1, np.asarray(probs) >= threshold
    wanted, right = (y, call) if point.rule == "sensitivity" else (~y, ~call)
    hits, of = int((right & wanted).sum()), int(wanted.sum())
    if of == 0:
        return None
    exact = binomtest(hits, of).proportion_ci(0.95, "exact")
    if exact.high - exact.low <= TARGET_SPREAD:
        return None
    kind = "positives" if point.rule == "sensitivity" else "negatives"
    return (
        f"the threshold reached {point.text} on {of} validation {kind} ({hits} of {of}, exact 95 % interval "
        f"{exact.low:.2f}-{exact.high:.2f}): on so few, the {point.rule} on other breasts may be far from "
        f"{point.target:g}; read the held-out {point.rule} and its interval"
    )


def target_missed(
    point: OperatingPoint, rates: dict[str, Any], intervals: dict[str, list[float]] | None, where: str
) -> str | None:
    """A warning where the held-out rate's 95 % interval leaves out the target the threshold was chosen
    for (`rates`, `intervals`: the figures at that threshold on the held-out breasts, by name)."""
    if point.target is None or not intervals:
        return None
    rate, (low, high) = rates[point.rule], intervals[point.rule]
    if low <= point.target <= high:
        return None
    return (
        f"{where}: {point.rule} {rate:.2f} [{low:.2f}, {high:.2f}] at the threshold chosen for {point.text} "
        "on validation: the target did not hold on breasts that did not choose it"
    )


def at_threshold(labels: np.ndarray, probs: np.ndarray, threshold: float | np.ndarray) -> dict[str, object]:
    """Accuracy, sensitivity, specificity, PPV, NPV and the confusion matrix at `threshold`: one for every
    breast, or each breast's own (e.g. its fold's; their mean is what is recorded)."""
    labels = np.asarray(labels)
    pred = (np.asarray(probs) >= np.asarray(threshold)).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[0, 1]).ravel()

    def ratio(a: int, b: int) -> float:
        return float(a / b) if b else float("nan")

    return {
        "threshold": float(np.mean(threshold)),
        "accuracy": ratio(tp + tn, len(labels)),
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")


def rate_text(value: float, interval: list[float] | None = None) -> str:
    """A rate as printed, with its interval where there is one: "n/a" where the rate has no value (no
    breast called positive has no PPV), never "nan"."""
    if np.isnan(value):
        return "n/a"
    if interval is None or np.isnan(interval).any():
        return f"{value:.2f}"
    return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def rates_with_ci(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float | np.ndarray,
    groups: np.ndarray | None = None,
    n: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, list[float]]:
    """95 % intervals of sensitivity, specificity, PPV, NPV and accuracy at a fixed threshold (or each
    breast's own, as `at_threshold` takes it), from the
    same patient bootstrap as the AUC (the threshold is not re-chosen per resample: it was fixed on
    validation), each widened where needed to cover the exact binomial (Clopper-Pearson) interval of the
    breast counts. A percentile bootstrap of a rate near 0 or 1 is too narrow on a small split, and of a
    rate of 0 or 1 has no width at all: 10 of 10 positives found reads [1.00, 1.00] however few the
    breasts, where the exact interval is [0.69, 1.00]."""
    y = np.asarray(labels) == 1
    call = np.asarray(probs) >= np.asarray(threshold)
    w = patient_weights(y.astype(int), groups, n, np.random.default_rng(seed))
    weights = np.vstack([np.ones(len(y)), w])  # row 0: the breasts as they are
    tp, fp = weights @ (y & call), weights @ (~y & call)
    fn, tn = weights @ (y & ~call), weights @ (~y & ~call)
    counts = {  # (hits, trials) per row
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
        "ppv": (tp, tp + fp),
        "npv": (tn, tn + fn),
        "accuracy": (tp + tn, weights.sum(axis=1)),
    }
    intervals = {}
    for name, (hits, trials) in counts.items():
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a rate undefined in every resample (no breast
            low, high = np.nanpercentile(hits[1:] / trials[1:], [2.5, 97.5])  # called positive: no PPV)
        if trials[0] > 0:  # [nan, nan] where the rate has no value, shown as such
            low, high = covering_exact(low, high, hits[0], trials[0])
        intervals[name] = [float(low), float(high)]
    return intervals


def covering_exact(low: float, high: float, hits: float, trials: float) -> tuple[float, float]:
    """A bootstrap interval of a proportion, widened where needed to cover the exact binomial
    (Clopper-Pearson) interval of the breast counts (see rates_with_ci)."""
    exact = binomtest(int(round(hits)), int(round(trials))).proportion_ci(0.95, "exact")
    return float(np.fmin(low, exact.low)), float(np.fmax(high, exact.high))


def logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def intercept_fit(y: np.ndarray, lp: np.ndarray, w: np.ndarray | None = None) -> float:
    """The intercept a of y ~ a + offset(lp), the slope fixed at 1 (calibration-in-the-large), by Newton's
    method; `w`: a weight per breast."""
    w = np.ones_like(lp) if w is None else w
    a = 0.0
    for _ in range(50):
        mu = expit(a + lp)  # no overflow warning where the predictions are extreme
        step = float(np.sum(w * (y - mu)) / max(float(np.sum(w * mu * (1 - mu))), 1e-12))
        a += step
        if abs(step) < 1e-10:
            break
    return float(a)


def logistic_fit(y: np.ndarray, lp: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """(intercept, slope) of the logistic regression y ~ b0 + b1 lp, by Newton's method (no extra
    dependency); `w`: a weight per breast."""
    w = np.ones_like(lp) if w is None else w
    beta = np.zeros(2)
    x = np.column_stack([np.ones_like(lp), lp])
    for _ in range(50):
        fitted = expit(x @ beta)
        hessian = (x * (w * fitted * (1 - fitted))[:, None]).T @ x + 1e-9 * np.eye(2)
        delta = np.linalg.solve(hessian, x.T @ (w * (y - fitted)))
        beta += delta
        if np.abs(delta).max() < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def _calibration_fit(y: np.ndarray, lp: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(intercept with the slope fixed at 1, slope) of a weighted logistic recalibration y ~ lp."""
    return intercept_fit(y, lp, w), logistic_fit(y, lp, w)[1]


def calibration_with_ci(
    labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None, n: int = 500, seed: int = 0
) -> dict[str, float]:
    """Calibration intercept (calibration-in-the-large; 0 is ideal) and slope (1 is ideal; below 1: the
    predictions are too extreme, the usual sign of overfitting), with 95 % patient-bootstrap intervals."""
    y, lp = np.asarray(labels, float), logit(probs)
    intercept, slope = _calibration_fit(y, lp, np.ones_like(y))
    fits = np.array(
        [
            _calibration_fit(y, lp, w)
            for w in patient_weights(y.astype(int), groups, n, np.random.default_rng(seed))
        ]
    )
    (i_low, s_low), (i_high, s_high) = np.nanpercentile(fits, [2.5, 97.5], axis=0)
    return {
        "intercept": intercept,
        "intercept_low": float(i_low),
        "intercept_high": float(i_high),
        "slope": slope,
        "slope_low": float(s_low),
        "slope_high": float(s_high),
    }


def binned_calibration(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray | None = None,
    bins: int = 5,
    n: int = 500,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Quantile bins of the predictions (as sklearn's calibration_curve makes them; empty ones dropped):
    each bin's breasts, mean prediction, observed fraction positive and that fraction's 95 %
    patient-bootstrap interval (the bins fixed, the patients resampled), never narrower than the exact
    binomial interval of the bin's breasts: a bin of 20 breasts with no positive is [0, 0.17], not [0, 0]."""
    y, p = np.asarray(labels, float), np.asarray(probs, float)
    edges = np.percentile(p, np.linspace(0, 100, bins + 1))
    ids = np.searchsorted(edges[1:-1], p)
    used = np.unique(ids)
    member = ids[None, :] == used[:, None]  # (bins, N)
    weights = patient_weights(y.astype(int), groups, n, np.random.default_rng(seed))  # (n, N)
    with np.errstate(invalid="ignore", divide="ignore"):  # a bin no patient of a resample is in
        resampled = (weights @ (member * y).T) / (weights @ member.T)  # (n, bins)
    count, positives = member.sum(1), member @ y
    bounds = np.nanpercentile(resampled, [2.5, 97.5], axis=0).T
    low, high = np.array([covering_exact(lo, hi, k, m) for (lo, hi), k, m in zip(bounds, positives, count)]).T
    return {
        "n": count,
        "predicted": (member @ p) / count,
        "observed": positives / count,
        "low": low,
        "high": high,
    }


def net_benefit(
    labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Decision-curve net benefit at each threshold probability t: TP/N - FP/N x t / (1 - t)
    (Vickers & Elkin 2006); with (n, N) bootstrap weights, one curve per resample: (n, thresholds)."""
    y = np.asarray(labels) == 1
    call = (np.asarray(probs)[None, :] >= thresholds[:, None]).astype(float)  # (thresholds, N)
    w = np.ones((1, len(y))) if weights is None else np.atleast_2d(weights)
    tp, fp = (w * y) @ call.T, (w * ~y) @ call.T  # (n, thresholds)
    curves = (tp - fp * thresholds / (1 - thresholds)) / w.sum(axis=1, keepdims=True)
    return curves[0] if weights is None else curves


def net_benefit_band(
    labels: np.ndarray,
    probs: np.ndarray,
    thresholds: np.ndarray,
    groups: np.ndarray,
    n: int = 500,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % patient-bootstrap band of the net benefit at each threshold (stratified as the AUC's)."""
    weights = patient_weights(np.asarray(labels), groups, n, np.random.default_rng(seed))
    low, high = np.percentile(net_benefit(labels, probs, thresholds, weights), [2.5, 97.5], axis=0)
    return low, high


def brier(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(brier_score_loss(labels, probs))


def summary(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float | np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Every headline figure of one model on one split (`groups`: the patient of each breast; `threshold`:
    one, or each breast's own)."""
    return {
        "n": int(len(labels)),
        "positives": int(np.sum(labels)),
        "auc": auc_with_ci(labels, probs, groups, seed=seed),
        "brier": brier(labels, probs),
        "at_0.5": at_threshold(labels, probs, 0.5),
        "at_youden": at_threshold(labels, probs, threshold),
        "at_youden_ci": rates_with_ci(labels, probs, threshold, groups, seed=seed),
        "calibration": calibration_with_ci(labels, probs, groups, seed=seed),
    }
