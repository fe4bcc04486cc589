"""How many labelled breasts a validation needs: the sample size for a target precision (Riley et al. 2021).

A validation (a test split; `predict --labels` at another hospital) estimates the model's AUC, its
calibration slope and its observed / expected ratio (O/E, calibration in the large); with too few breasts
their intervals are too wide to tell a useful model from a useless one. Riley et al. (Stat Med 2021;
40:4230-51, "Minimum sample size for external validation of a clinical prediction model with a binary
outcome") give the breasts each needs for a target interval width, from the outcome's prevalence and the
distribution of the model's linear predictor (its logit) at the site. That distribution is anticipated by
the model's own held-out breasts (a run's test split, a cross-validation's out-of-fold predictions), shifted
to the site's prevalence where one is given; the anticipated AUC is the held-out one unless given. The
largest of the three is the sample size. The widths a given number of breasts would reach come from the same
formulas (the precision of a validation already planned or done).

- O/E: SE(ln O/E) = sqrt((1 - phi) / (n phi)); the interval exp(ln O/E +- z SE)
  around 1.
- Calibration slope: the inverse of the Fisher information of the logistic calibration model (intercept,
  slope) at intercept 0, slope 1 (a calibrated model), averaged over the linear predictor's distribution.
- AUC: Newcombe's (2006) standard error, which depends on the AUC, phi and n.

Each is the precision of an estimate on that many breasts, not of an interval by the patient bootstrap
mammofuse reports (for a patient's two breasts it is a little wider); each assumes breasts like the
held-out ones. `tests/evaluation/test_samplesize.py` checks every formula against simulated validations.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp, sqrt

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, logit

from mammofuse.evaluation import metrics
from mammofuse.problems import DataError
from mammofuse.runs import Run

Z = 1.959963984540054  # two-sided 95 %
MOST = 10_000_000  # breasts: beyond this a target is called out of reach


@dataclass(frozen=True)
class Anticipated:
    """What a validation is expected to see: the model's logits on breasts like the held-out ones (shifted
    to `prevalence`), and its AUC."""

    logits: np.ndarray
    prevalence: float
    auc: float

    @classmethod
    def from_held_out(
        cls, labels: np.ndarray, probabilities: np.ndarray, prevalence: float | None, auc: float
    ) -> Anticipated:
        """From held-out breasts' labels and probabilities: their logits shifted so that the mean
        probability is `prevalence` (default: theirs)."""
        labels, probabilities = np.asarray(labels, int), np.asarray(probabilities, float)
        positives = int(labels.sum())
        if positives == 0 or positives == len(labels):
            raise DataError("the held-out breasts hold one class only: no prevalence or AUC to anticipate")
        lp = logit(np.clip(probabilities, 1e-6, 1 - 1e-6))
        phi = prevalence if prevalence is not None else positives / len(labels)
        shift = brentq(lambda d: float(expit(lp + d).mean()) - phi, -30, 30)
        return cls(lp + shift, phi, auc)


def oe_width(n: float, a: Anticipated) -> float:
    """The width of the 95 % interval of O/E around 1 on n breasts."""
    se = sqrt((1 - a.prevalence) / (n * a.prevalence))
    return exp(Z * se) - exp(-Z * se)


def slope_width(n: float, a: Anticipated) -> float:
    """The width of the 95 % interval of the calibration slope on n breasts (a calibrated model)."""
    p = expit(a.logits)
    w = p * (1 - p)
    information = np.array(
        [[w.mean(), (w * a.logits).mean()], [(w * a.logits).mean(), (w * a.logits**2).mean()]]
    )
    return 2 * Z * sqrt(np.linalg.inv(information)[1, 1] / n)


def auc_width(n: float, a: Anticipated) -> float:
    """The width of the 95 % interval of the AUC on n breasts (Newcombe 2006)."""
    c, phi, half = a.auc, a.prevalence, n / 2 - 1
    variance = c * (1 - c) * (1 + half * (1 - c) / (2 - c) + half * c / (1 + c)) / (n**2 * phi * (1 - phi))
    return 2 * Z * sqrt(variance)


WIDTHS = {"AUC": auc_width, "calibration slope": slope_width, "O/E": oe_width}
TARGETS = {"AUC": 0.1, "calibration slope": 0.2, "O/E": 0.2}  # Riley et al.'s suggested interval widths


def needed(width, target: float, a: Anticipated) -> int | None:
    """The fewest breasts whose interval is at most `target` wide (None: more than MOST)."""
    if width(MOST, a) > target:
        return None
    low, high = 10, MOST  # width falls as n grows: bisect on whole breasts
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if width(middle, a) > target else (low, middle)
    return low


def sample_size(a: Anticipated, targets: dict[str, float], breasts: list[int]) -> pd.DataFrame:
    """One row per criterion: its target width, the breasts (and positives) needed, and the width each of
    `breasts` would give (columns `width at N`)."""
    rows = []
    for criterion, target in targets.items():
        width = WIDTHS[criterion]
        n = needed(width, target, a)
        row: dict[str, object] = {
            "criterion": criterion,
            "target_width": target,
            "breasts": n,
            "positives": None if n is None else int(np.ceil(n * a.prevalence)),
        }
        row.update({f"width at {b}": width(b, a) for b in breasts})
        rows.append(row)
    return pd.DataFrame(rows)


def held_out(run: Run) -> tuple[np.ndarray, np.ndarray, float, str]:
    """A run's held-out breasts: labels, probabilities, AUC and what they are (a single run's test split;
    a cross-validation's out-of-fold predictions of its first repeat, whose AUC is the pooled one on one
    scale: the folds' probabilities as scored mix their scales, cv.standardised)."""
    if not run.is_cv:
        every = run.read_predictions()
        scored = every[every["split"] == "test"]
        labels, probabilities = scored["label"].to_numpy(), scored["probability"].to_numpy()
        return labels, probabilities, metrics.auc(labels, probabilities), "the test split's breasts"
    oof = run.read_oof()
    scored = oof[oof["repeat"] == 0]
    auc = run.read_cv_evaluation().model.auc.auc
    return scored["label"].to_numpy(), scored["probability"].to_numpy(), auc, "the out-of-fold breasts"


def needed_text(run: Run) -> str | None:
    """The model card's line: the labelled breasts a validation with Riley et al.'s interval widths needs
    (None where the held-out breasts are too few of a class to anticipate anything)."""
    labels, probabilities, auc, where = held_out(run)
    if min(labels.sum(), len(labels) - labels.sum()) < metrics.FEWEST_FOR_INTERVAL:
        return None
    a = Anticipated.from_held_out(labels, probabilities, None, auc)
    table = sample_size(a, TARGETS, [])
    if table["breasts"].isna().any():
        return None
    most = table.loc[table["breasts"].astype(int).idxmax()]
    return (
        f"a validation with 95 % intervals {TARGETS['AUC']:g} wide for the AUC and "
        f"{TARGETS['calibration slope']:g} for the calibration slope and O/E needs about "
        f"{int(most['breasts']):,} labelled breasts ({int(most['positives']):,} positive) like {where} "
        f"(set by the {most['criterion']}: Riley et al. 2021, `mammofuse samplesize`)"
    )
