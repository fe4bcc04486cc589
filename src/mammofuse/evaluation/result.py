"""The typed evaluation result: what metrics.json holds, read and written in one shape.

explain, report, the bundle and the terminal read these objects, never the JSON's nested dicts.
NaN (a metric that is undefined, e.g. PPV with no positive call) is written as the JSON constant NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def p_text(p: float) -> str:
    """'p = 0.012', or 'p < 0.0005' where three decimals would read 0.000."""
    return "p < 0.0005" if p < 0.0005 else f"p = {p:.3f}"


NO_INTERVAL = "no interval"  # too few breasts of a class: the warnings say how few


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True, exclude_none=True)


class AucInterval(_Result):
    auc: float
    low: float
    high: float
    n_bootstrap: int
    unit: str = "breast"  # what the bootstrap resampled: "patient" (all their breasts) or "breast"

    @property
    def has_interval(self) -> bool:
        """False where a class had too few breasts for one (metrics.FEWEST_FOR_INTERVAL): NaN bounds."""
        return self.low == self.low

    @property
    def text(self) -> str:
        """'0.812 [0.712, 0.905]', or '1.000 (no interval)'."""
        if not self.has_interval:
            return f"{self.auc:.3f} ({NO_INTERVAL})"
        return f"{self.auc:.3f} [{self.low:.3f}, {self.high:.3f}]"


RULES = ("youden", "sensitivity", "specificity")


class OperatingPoint(_Result):
    """How the decision threshold is chosen on the validation breasts (and then applied unchanged to the
    held-out ones): Youden's J (sensitivity + specificity - 1 at its largest, the default), the highest
    threshold whose sensitivity reaches `target` (fewest positive calls that find that share of the
    positives), or the lowest whose specificity reaches it. Written on the command line as `youden`,
    `sensitivity:0.90` or `specificity:0.90`."""

    model_config = ConfigDict(frozen=True)

    rule: Literal["youden", "sensitivity", "specificity"] = "youden"
    target: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _target_with_its_rule(self) -> OperatingPoint:
        if (self.rule == "youden") != (self.target is None):
            raise ValueError(
                "youden takes no target" if self.rule == "youden" else f"{self.rule} needs a target in (0, 1)"
            )
        return self

    @classmethod
    def parse(cls, text: str) -> OperatingPoint:
        """'youden', 'sensitivity:0.9' or 'specificity:0.9' (ValueError saying what is allowed)."""
        rule, _, target = text.strip().lower().partition(":")
        allowed = "youden, sensitivity:T or specificity:T with T between 0 and 1 (e.g. sensitivity:0.90)"
        if rule not in RULES or (rule == "youden") != (target == ""):
            raise ValueError(f"{text!r} is not an operating point: give {allowed}")
        try:
            return cls(rule=rule, target=float(target) if target else None)
        except ValueError:  # not a number, or not between 0 and 1 (pydantic's error is a ValueError)
            raise ValueError(f"{text!r} is not an operating point: give {allowed}") from None

    def __str__(self) -> str:
        """The command line's spelling: 'youden', 'sensitivity:0.9'."""
        return self.rule if self.target is None else f"{self.rule}:{self.target:g}"

    @property
    def text(self) -> str:
        """How a report says it: "Youden's J" or 'sensitivity ≥ 0.9'."""
        return "Youden's J" if self.target is None else f"{self.rule} ≥ {self.target:g}"

    @property
    def description(self) -> str:
        """The rule in words, for a report's sentence."""
        if self.target is None:
            return "Youden's J: sensitivity + specificity - 1 at its largest"
        which = "highest" if self.rule == "sensitivity" else "lowest"
        return f"the {which} threshold whose {self.rule} there reached {self.target:g}"


class Confusion(_Result):
    tn: int
    fp: int
    fn: int
    tp: int


class AtThreshold(_Result):
    threshold: float
    accuracy: float
    sensitivity: float
    specificity: float
    ppv: float
    npv: float
    confusion: Confusion


class Calibration(_Result):
    """Logistic recalibration of the predictions: intercept (slope fixed at 1) and slope, 95 % intervals."""

    intercept: float
    intercept_low: float
    intercept_high: float
    slope: float
    slope_low: float
    slope_high: float

    @property
    def text(self) -> str:
        """'intercept +0.26 [+0.17, +0.34], slope 1.39 [1.13, 1.69]'."""
        return (
            f"intercept {self.intercept:+.2f} [{self.intercept_low:+.2f}, {self.intercept_high:+.2f}], "
            f"slope {self.slope:.2f} [{self.slope_low:.2f}, {self.slope_high:.2f}]"
        )


class SplitMetrics(_Result):
    """Every headline figure of one model on one split."""

    n: int
    positives: int
    auc: AucInterval
    brier: float
    at_half: AtThreshold = Field(alias="at_0.5")
    at_youden: AtThreshold  # at the threshold chosen on validation (by the rule OperatingPoint names)
    at_youden_ci: dict[str, list[float]] | None = None  # rate -> [low, high], patient bootstrap
    calibration: Calibration | None = None


class ModelMetrics(_Result):
    test: SplitMetrics
    val_auc: float
    # apparent AUC: the kept model on its own training breasts as it scores new ones (unaugmented, eval mode;
    # None in a metrics.json written before it was measured, or where the training part has one class)
    train_auc: float | None = None

    @property
    def optimism(self) -> float | None:
        """Apparent minus test AUC: how much better the model ranks the breasts it learnt from than new ones
        (near 0: it generalises as far as the test split can tell; large: overfitting)."""
        return None if self.train_auc is None else self.train_auc - self.test.auc.auc

    @property
    def threshold(self) -> float:
        """The decision threshold chosen on validation (by the evaluation's operating point) and applied to
        test."""
        return self.test.at_youden.threshold


class Comparison(_Result):
    """AUC(image + clinical) - AUC(clinical only) on the same test breasts (paired bootstrap)."""

    difference: float
    low: float
    high: float
    p_value: float

    @property
    def text(self) -> str:
        """'+0.189 [+0.080, +0.312], paired bootstrap p = 0.001'."""
        if self.low != self.low:  # NaN: too few of a class
            return f"{self.difference:+.3f} ({NO_INTERVAL}, no p-value)"
        interval = f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"
        return f"{interval}, paired bootstrap {p_text(self.p_value)}"


MODEL, IMAGE_ONLY, BASELINE = "image + clinical", "image only", "clinical only"

APPARENT = (
    "apparent AUC: each model on its own training breasts, scored as new breasts are (no augmentation, "
    "eval mode); optimism: apparent minus held-out AUC (near 0: it ranks new breasts as well as the ones it "
    "learnt from; large: it has learnt its training breasts, not the task, i.e. overfitting)"
)


def apparent_text(parts: Sequence[tuple[str, ModelMetrics | PooledMetrics | None]]) -> str | None:
    """'image + clinical 0.853 (optimism -0.018); clinical only 0.641 (+0.136)', or None where no model
    has an apparent AUC (a metrics.json written before it was measured)."""
    shown = [
        f"{name} {part.train_auc:.3f} (optimism {part.optimism:+.3f})"
        for name, part in parts
        if part is not None and part.train_auc is not None and part.optimism is not None
    ]
    return "; ".join(shown) or None


class _Named:
    baseline: object

    @property
    def model_name(self) -> str:
        """How the terminal, the figures and the report name the model: a run without clinical inputs
        (clinical.use = false) has no clinical-only baseline and is an image-only model."""
        return MODEL if self.baseline is not None else IMAGE_ONLY


class Evaluation(_Named, _Result):
    run: str
    operating_point: OperatingPoint = OperatingPoint()  # how both models' thresholds were chosen
    model: ModelMetrics
    baseline: ModelMetrics | None = None
    comparison: Comparison | None = None
    warnings: list[str] = []
    contributions: dict[str, AucInterval] | None = None  # test AUC with an input removed (evaluate)


class PooledMetrics(_Result):
    """One model's out-of-fold figures over every breast (cross-validation)."""

    auc: AucInterval  # the pooled out-of-fold AUC (mean over repeats), patient bootstrap interval, each
    # fold's scores standardised on its validation breasts (evaluation.cv.standardised)
    auc_as_scored: AucInterval | None = None  # the same of the probabilities as the folds gave them
    fold_aucs: list[float]  # each held-out fold on its own, repeat by repeat
    brier: float
    at_threshold: AtThreshold  # every breast called at its own fold's validation-chosen threshold
    at_threshold_ci: dict[str, list[float]] | None = None  # rate -> [low, high] (first repeat)
    calibration: Calibration | None = None  # of the first repeat's out-of-fold probabilities
    fold_train_aucs: list[float] | None = None  # each fold's apparent AUC (ModelMetrics.train_auc)

    @property
    def train_auc(self) -> float | None:
        """The mean apparent AUC over the folds (None where a fold lacks one)."""
        if not self.fold_train_aucs:
            return None
        return sum(self.fold_train_aucs) / len(self.fold_train_aucs)

    @property
    def optimism(self) -> float | None:
        """The mean apparent AUC minus the pooled out-of-fold AUC."""
        return None if self.train_auc is None else self.train_auc - self.auc.auc

    @property
    def fold_auc_text(self) -> str:
        """'0.801 ± 0.043 (10 folds)': mean and sample sd of the fold AUCs."""
        values = [v for v in self.fold_aucs if v == v]  # a fold with one class has no AUC
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
        return f"{mean:.3f} ± {sd:.3f} ({len(values)} folds)"


class CvEvaluation(_Named, _Result):
    """What `mammofuse cv` writes to the run's metrics.json."""

    run: str
    folds: int
    repeats: int
    breasts: int
    positives: int
    patients: int
    operating_point: OperatingPoint = OperatingPoint()  # how every fold chose its thresholds
    model: PooledMetrics
    baseline: PooledMetrics | None = None
    comparison: Comparison | None = None
    warnings: list[str] = []


class Versus(_Result):
    """Two bundles on the same new labelled breasts (`predict --labels --versus`): paired, on the breasts
    both scored."""

    bundle: str  # the other bundle
    kind: str
    n: int
    positives: int
    auc: AucInterval  # this bundle's, on these breasts
    other_auc: AucInterval
    comparison: Comparison  # this bundle's AUC minus the other's, paired bootstrap


class ExternalValidation(_Result):
    """What `predict --labels` writes to validation.json: a bundle on labelled breasts none of its members
    saw (evaluation.external). Nothing in it was fitted on these breasts."""

    bundle: str
    kind: str  # "single model" or "fold ensemble"
    labels: str  # the label CSV's file name
    model_name: str
    listed: int  # breasts in predict's output
    scored: int
    labelled: int  # scored breasts with a valid label: the breasts of every figure here
    operating_point: OperatingPoint = OperatingPoint()  # how the bundle's threshold was chosen
    chosen_on: str = "its training cohort's validation breasts"  # where (or a recalibration's site)
    model: SplitMetrics  # at_youden: at the bundle's threshold
    baseline: SplitMetrics | None = None  # the clinical-only regression that travelled with the bundle
    comparison: Comparison | None = None
    internal_auc: AucInterval | None = None  # what the bundle was validated with, for comparison
    internal: str = ""  # where: "test split" or "pooled out-of-fold"
    training_prevalence: float | None = None  # share of label 1 among the training breasts
    warnings: list[str] = []
    subgroups: list[dict[str, str]] = []  # AUC by manufacturer, density, age and tumour size band
    versus: Versus | None = None

    @property
    def prevalence_text(self) -> str:
        """'24.7 % label 1 here, 24.3 % in training': what PPV, NPV and calibration in the large vary with."""
        here = f"{100 * self.model.positives / self.model.n:.1f} % label 1 here"
        if self.training_prevalence is None:
            return here
        return f"{here}, {100 * self.training_prevalence:.1f} % in training"


class OneClassRate(_Result):
    """The one rate a model has on labelled breasts of one class, at its threshold: specificity where every
    breast is label 0 (the share called negative), sensitivity where every one is label 1."""

    name: Literal["specificity", "sensitivity"]
    hits: int  # breasts called their own class
    n: int
    value: float
    low: float  # 95 %: patient bootstrap, never narrower than the exact binomial interval of the counts
    high: float
    threshold: float

    @property
    def text(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}] ({self.hits} of {self.n})"


class OneClassValidation(_Result):
    """What `predict --labels` writes to validation.json where every labelled breast scored is of one class
    (a site's negatives, say): the AUC, calibration, PPV and NPV need both classes; the share of these breasts
    the bundle's threshold calls right does not. Nothing in it was fitted on these breasts."""

    bundle: str
    kind: str
    labels: str
    model_name: str
    listed: int
    scored: int
    labelled: int
    label: Literal[0, 1]  # the one class
    operating_point: OperatingPoint = OperatingPoint()
    chosen_on: str = "its training cohort's validation breasts"
    model: OneClassRate
    baseline: OneClassRate | None = None  # the clinical-only regression, at its own threshold
    versus_bundle: str | None = None  # --versus: the other bundle, its rate on the breasts both scored
    versus: OneClassRate | None = None
    warnings: list[str] = []
