import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mammofuse.evaluation import metrics

Y = np.array([0, 0, 0, 0, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])


class TestAuc:
    def test_hand_computed_case(self):
        # positives 0.5 and 0.9 against negatives 0.1 0.2 0.3 0.6: 7 of 8 pairs ranked right
        assert metrics.auc(Y, P) == pytest.approx(7 / 8)

    def test_one_class_is_undefined(self):
        assert np.isnan(metrics.auc(np.zeros(4), np.arange(4)))

    def test_vectorised_bootstrap_auc_equals_sklearn(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, (5, 40))
        s = rng.random((5, 40)).round(1)  # ties included
        expected = [roc_auc_score(a, b) for a, b in zip(y, s)]
        np.testing.assert_allclose(metrics._fast_auc(y, s), expected)


class TestBootstrap:
    def test_resamples_keep_the_class_counts(self):
        idx = metrics.stratified_resamples(Y, 50, np.random.default_rng(0))
        assert idx.shape == (50, 6) and (Y[idx].sum(axis=1) == 2).all()

    def test_interval_surrounds_the_estimate_and_uses_2000_resamples(self):
        rng = np.random.default_rng(1)
        y = rng.integers(0, 2, 200)
        p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
        ci = metrics.auc_with_ci(y, p)
        assert ci["low"] < ci["auc"] < ci["high"] and ci["n_bootstrap"] >= 2000

    def test_paired_difference_of_a_model_with_itself_is_zero(self):
        d = metrics.paired_auc_difference(Y, P, P, n=200)
        assert d["difference"] == 0 and d["low"] == d["high"] == 0 and d["p_value"] == 1.0

    def test_paired_difference_detects_a_better_model(self):
        rng = np.random.default_rng(2)
        y = rng.integers(0, 2, 300)
        good, noise = y + rng.normal(0, 0.5, 300), rng.random(300)
        d = metrics.paired_auc_difference(y, good, noise, n=500)
        assert d["low"] > 0 and d["p_value"] < 0.01


class TestThresholds:
    def test_youden_picks_the_best_cut(self):
        assert metrics.youden_threshold(Y, P) == pytest.approx(0.5)

    def test_metrics_at_a_threshold(self):
        m = metrics.at_threshold(Y, P, 0.5)
        assert m["confusion"] == {"tn": 3, "fp": 1, "fn": 0, "tp": 2}
        assert m["sensitivity"] == 1.0 and m["specificity"] == 0.75 and m["ppv"] == pytest.approx(2 / 3)
        assert m["npv"] == 1.0 and m["accuracy"] == pytest.approx(5 / 6)

    def test_brier_score(self):
        assert metrics.brier(np.array([0, 1]), np.array([0.0, 0.5])) == pytest.approx(0.125)
