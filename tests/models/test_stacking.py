import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression

from mammofuse.deploy.recalibrate import cross_fitted
from mammofuse.evaluation import metrics
from mammofuse.evaluation.result import OperatingPoint
from mammofuse.models.stacking import ClinicalBaseline, Recalibration, logit


def test_the_stored_clinical_baseline_scores_exactly_as_the_fitted_regression():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6))
    y = (x[:, 0] - x[:, 3] + rng.normal(size=200) > 0).astype(int)
    stored = ClinicalBaseline.model_validate_json(ClinicalBaseline.fit(x, y, seed=0).model_dump_json())
    fitted = LogisticRegression(max_iter=2000, random_state=0).fit(x, y)
    new = rng.normal(size=(50, 6))
    np.testing.assert_array_equal(stored.apply(new), fitted.predict_proba(new)[:, 1])


def miscalibrated(n: int = 4000, intercept: float = 0.8, slope: float = 1.5, seed: int = 5):
    """Labels drawn from sigmoid(intercept + slope x logit(p)): the model's p is too low and too flat."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(-1.2, 1.0, n))
    y = (rng.random(n) < expit(intercept + slope * logit(p))).astype(int)
    return y, p


def test_a_logistic_recalibration_finds_the_map_the_labels_were_drawn_with():
    y, p = miscalibrated()
    fitted = Recalibration.fit(y, p, "logistic", site="a site")
    assert fitted.intercept == pytest.approx(0.8, abs=0.15) and fitted.slope == pytest.approx(1.5, abs=0.15)
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10000).fit(logit(p)[:, None], y)
    assert fitted.intercept == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert fitted.slope == pytest.approx(reference.coef_[0, 0], abs=1e-4)
    stored = Recalibration.model_validate_json(fitted.model_dump_json())
    assert stored.apply(p).mean() == pytest.approx(y.mean(), abs=1e-9)  # right on average, where fitted
    assert (fitted.breasts, fitted.positives, fitted.site) == (len(y), y.sum(), "a site")


def test_an_intercept_recalibration_keeps_the_slope_and_is_right_on_average():
    y, p = miscalibrated()
    fitted = Recalibration.fit(y, p, "intercept", site="")
    assert fitted.slope == 1.0 and fitted.intercept > 0.3  # the model's probabilities were too low
    assert fitted.apply(p).mean() == pytest.approx(y.mean(), abs=1e-9)
    order = np.argsort(p)
    assert (np.diff(fitted.apply(p)[order]) >= 0).all()  # the ranking is the model's


def test_cross_fitting_recalibrates_each_patient_by_a_fit_on_the_others():
    y, p = miscalibrated(n=600)
    p[1::2] = p[::2]  # a patient's two breasts, the same model probability
    groups = np.repeat(np.arange(300), 2)
    crossed, _ = cross_fitted(y, p, groups, "logistic", folds=5, seed=0)
    whole = Recalibration.fit(y, p, "logistic", site="").apply(p)
    assert not np.allclose(crossed, whole)  # not the fit on every breast
    np.testing.assert_array_equal(crossed[::2], crossed[1::2])  # one patient, one fold: one map
    assert len(np.unique(np.round(logit(crossed) - logit(p), 9))) > 5  # the folds' maps differ
    calibration = metrics.calibration_with_ci(y, crossed, groups, n=50)
    assert abs(calibration["intercept"]) < 0.15 and calibration["slope"] == pytest.approx(1.0, abs=0.2)


def test_cross_fitting_an_operating_point_chooses_each_folds_threshold_on_the_other_folds():
    y, p = miscalibrated(n=600)
    groups = np.repeat(np.arange(300), 2)
    crossed, cuts = cross_fitted(y, p, groups, "logistic", 5, 0, OperatingPoint.parse("sensitivity:0.8"))
    assert len(np.unique(cuts)) == 5  # one threshold per fold
    for cut in np.unique(cuts):
        held_out = cuts == cut
        fit_on = ~np.isin(groups, groups[held_out])
        refit = Recalibration.fit(y[fit_on], p[fit_on], "logistic", site="").apply(p[fit_on])
        assert (refit[y[fit_on] == 1] >= cut).mean() >= 0.8  # reached where it was chosen
    found = (crossed[y == 1] >= cuts[y == 1]).mean()
    assert found == pytest.approx(0.8, abs=0.06)  # and about so on the breasts that did not choose it
