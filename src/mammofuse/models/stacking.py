"""The logistic regressions a run keeps beside its network, each stored as its coefficients (JSON, no pickle).

Late fusion (`model.fusion = "late"`): the network sees only the images; a logistic regression on its
logit and the encoded clinical vector, fitted on the validation breasts (never on test), makes the
probability. The clinical data cannot be drowned by the image features, and its weight is explicit.

The clinical-only baseline: a logistic regression on the encoded clinical vector alone, fitted on the
training split, with its threshold chosen on validation. Every evaluation shows it beside the model, and
it travels in the bundle so that a new labelled cohort is scored by both (`predict --labels`).

A site's recalibration (`mammofuse recalibrate`): the bundle's probability refitted to one site's labelled
breasts, logit(p') = a + b logit(p) (or the intercept alone, b = 1): the ranking is the model's, the
probabilities become that site's risks (updating for a new setting; Steyerberg, Clinical Prediction Models).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from mammofuse.evaluation.metrics import intercept_fit, logistic_fit
from mammofuse.evaluation.result import OperatingPoint

RecalibrationMethod = Literal["intercept", "logistic"]


def logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class Stacker(BaseModel):
    """stacker.json: nothing more, nothing less."""

    model_config = ConfigDict(extra="forbid")

    intercept: float
    image: float  # weight of the image network's logit
    clinical: list[float]  # weights of the encoded clinical features, in the encoder's order

    @classmethod
    def fit(cls, image_probs: np.ndarray, clinical: np.ndarray, labels: np.ndarray, seed: int = 0) -> Stacker:
        """Fitted on validation predictions (L2-regularised: the validation part is small)."""
        x = np.column_stack([logit(image_probs), clinical])
        model = LogisticRegression(max_iter=2000, random_state=seed).fit(x, labels)
        coef = model.coef_[0]
        return cls(
            intercept=float(model.intercept_[0]), image=float(coef[0]), clinical=[float(c) for c in coef[1:]]
        )

    def apply(self, image_probs: np.ndarray, clinical: np.ndarray) -> np.ndarray:
        z = (
            self.intercept
            + self.image * logit(image_probs)
            + np.asarray(clinical) @ np.asarray(self.clinical)
        )
        return 1 / (1 + np.exp(-z))


class ClinicalBaseline(BaseModel):
    """baseline.json: nothing more, nothing less."""

    model_config = ConfigDict(extra="forbid")

    intercept: float
    clinical: list[float]  # weights of the encoded clinical features, in the encoder's order
    threshold: float = Field(0.5, ge=0, le=1)  # chosen on the validation breasts (Youden)

    @classmethod
    def fit(cls, clinical: np.ndarray, labels: np.ndarray, seed: int = 0) -> ClinicalBaseline:
        """Fitted on the training breasts (the threshold is set afterwards, on validation)."""
        model = LogisticRegression(max_iter=2000, random_state=seed).fit(clinical, labels)
        return cls(intercept=float(model.intercept_[0]), clinical=[float(c) for c in model.coef_[0]])

    def apply(self, clinical: np.ndarray) -> np.ndarray:
        """The probability of label 1, as scikit-learn's predict_proba computes it."""
        return expit(np.asarray(clinical) @ np.asarray(self.clinical)[:, None] + self.intercept)[:, 0]


class LogitMap(BaseModel):
    """logit(p') = intercept + slope x logit(p): a probability refitted to a site's breasts."""

    model_config = ConfigDict(extra="forbid")

    intercept: float
    slope: float = 1.0

    @staticmethod
    def fitted(labels: np.ndarray, probs: np.ndarray, method: RecalibrationMethod) -> dict[str, float]:
        """The map's intercept and slope on these breasts ("intercept": the slope stays 1)."""
        y, lp = np.asarray(labels, float), logit(probs)
        intercept, slope = (intercept_fit(y, lp), 1.0) if method == "intercept" else logistic_fit(y, lp)
        return {"intercept": intercept, "slope": slope}

    def apply(self, probs: np.ndarray) -> np.ndarray:
        return expit(self.intercept + self.slope * logit(probs))


class ClinicalRecalibration(LogitMap):
    """The clinical-only regression refitted to the same site's breasts by the same method, so that the
    baseline beside a recalibrated model is recalibrated too: calibration, Brier, the operating point and net
    benefit then compare like with like."""

    threshold: float | None = Field(None, ge=0, le=1)  # chosen by the site's rule where the model's is


class Recalibration(LogitMap):
    """recalibration.json: nothing more, nothing less."""

    method: RecalibrationMethod
    site: str  # the breasts it was fitted on, in words (no patient identifier)
    breasts: int
    positives: int
    check: dict[str, Any] = {}  # cross-fitted figures on the same breasts, before and after
    # the site's own threshold on the recalibrated probability, chosen on its breasts by this rule (None:
    # the bundle's threshold, read as a risk at the site)
    operating_point: OperatingPoint | None = None
    threshold: float | None = Field(None, ge=0, le=1)
    clinical: ClinicalRecalibration | None = None  # None: a bundle recalibrated before mammofuse fitted it

    @classmethod
    def fit(
        cls, labels: np.ndarray, probs: np.ndarray, method: RecalibrationMethod, site: str
    ) -> Recalibration:
        return cls(
            **LogitMap.fitted(labels, probs, method),
            method=method,
            site=site,
            breasts=len(labels),
            positives=int(np.sum(labels)),
        )
