import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from mammofuse.evaluation import metrics
from mammofuse.evaluation.result import AucInterval, Comparison, OperatingPoint

Y = np.array([0, 0, 0, 0, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])


class TestAuc:
    def test_hand_computed_case(self):
        # positives 0.5 and 0.9 against negatives 0.1 0.2 0.3 0.6: 7 of 8 pairs ranked right
        assert metrics.auc(Y, P) == pytest.approx(7 / 8)

    def test_one_class_is_undefined(self):
        assert np.isnan(metrics.auc(np.zeros(4), np.arange(4)))

    def test_weighted_auc_equals_sklearn_on_the_resampled_breasts(self):
        rng = np.random.default_rng(0)
        y, s = rng.integers(0, 2, 40), rng.random(40).round(1)  # ties included
        weights = rng.integers(0, 3, (5, 40))  # how often each breast is in each of 5 resamples
        expected = [roc_auc_score(np.repeat(y, w), np.repeat(s, w)) for w in weights]
        np.testing.assert_allclose(metrics.weighted_auc(y, s, weights), expected)
        assert metrics.weighted_auc(y, s, np.ones(40))[0] == pytest.approx(roc_auc_score(y, s))


class TestPatientBootstrap:
    def test_a_patient_s_breasts_are_drawn_together_and_the_classes_kept(self):
        labels = np.array([1, 0, 0, 1, 0, 0])
        groups = np.array(["a", "a", "b", "c", "d", "d"])  # a and c have a positive breast
        w = metrics.patient_weights(labels, groups, 300, np.random.default_rng(0))
        assert w.shape == (300, 6) and (w[:, 0] == w[:, 1]).all() and (w[:, 4] == w[:, 5]).all()
        assert (w[:, 0] + w[:, 3] == 2).all()  # two patients with a positive breast, two drawn each time
        assert (w[:, 2] + w[:, 4] == 2).all()
        assert set(np.unique(w[:, 0])) == {0, 1, 2}

    def test_the_interval_is_wider_when_two_breasts_of_a_patient_always_agree(self):
        rng = np.random.default_rng(3)
        y = np.repeat(rng.integers(0, 2, 150), 2)  # 150 patients, two breasts with the same label and score
        p = np.repeat(rng.random(150), 2) * 0.6 + y * 0.3
        groups = np.repeat(np.arange(150), 2)
        by_patient = metrics.auc_with_ci(y, p, groups)
        by_breast = metrics.auc_with_ci(y, p)
        assert by_patient["unit"] == "patient" and by_breast["unit"] == "breast"
        width = lambda ci: ci["high"] - ci["low"]  # noqa: E731
        assert width(by_patient) > 1.25 * width(by_breast)  # about sqrt(2) for identical twins


class TestBootstrap:
    def test_interval_surrounds_the_estimate_and_uses_2000_resamples(self):
        rng = np.random.default_rng(1)
        y = rng.integers(0, 2, 200)
        p = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
        ci = metrics.auc_with_ci(y, p)
        assert ci["low"] < ci["auc"] < ci["high"] and ci["n_bootstrap"] >= 2000

    def test_paired_difference_of_a_model_with_itself_is_zero(self):
        rng = np.random.default_rng(3)
        y, p = rng.integers(0, 2, 60), rng.random(60)
        d = metrics.paired_auc_difference(y, p, p, n=200)
        assert d["difference"] == 0 and d["low"] == d["high"] == 0 and d["p_value"] == 1.0

    def test_p_is_never_zero_and_is_written_as_less_than(self):
        from mammofuse.evaluation.result import p_text

        rng = np.random.default_rng(4)
        y = rng.integers(0, 2, 300)
        d = metrics.paired_auc_difference(y, y + rng.normal(0, 0.1, 300), rng.random(300), n=2000)
        assert d["p_value"] == pytest.approx(2 / 2001)
        assert p_text(0.0001) == "p < 0.0005" and p_text(0.0123) == "p = 0.012"

    def test_a_small_class_is_warned_about(self):
        assert "fewer than 20" in metrics.small_sample_warning(12, 80)
        assert metrics.small_sample_warning(25, 80) is None
        assert "without an interval" in metrics.small_sample_warning(3, 80)

    def test_too_few_of_a_class_get_an_auc_without_an_interval_or_p(self):
        """One positive ranked first: the bootstrap would read 1.000 [1.000, 1.000], certainty from one
        breast; the AUC is given alone."""
        y = np.r_[np.zeros(30, int), np.ones(4, int)]
        p = np.r_[np.linspace(0, 0.5, 30), np.linspace(0.6, 1, 4)]
        interval = AucInterval.model_validate(metrics.auc_with_ci(y, p))
        assert interval.auc == 1.0 and interval.text == "1.000 (no interval)"
        diff = Comparison.model_validate(metrics.paired_auc_difference(y, p, np.zeros(34)))
        assert diff.text == "+0.500 (no interval, no p-value)"
        five = np.r_[np.zeros(30, int), np.ones(5, int)]  # enough: an interval, as before
        assert metrics.auc_with_ci(five, np.r_[p, 1.0])["low"] == 1.0

    def test_paired_difference_detects_a_better_model(self):
        rng = np.random.default_rng(2)
        y = rng.integers(0, 2, 300)
        good, noise = y + rng.normal(0, 0.5, 300), rng.random(300)
        d = metrics.paired_auc_difference(y, good, noise, n=500)
        assert d["low"] > 0 and d["p_value"] < 0.01


class TestThresholds:
    def test_youden_picks_the_best_cut(self):
        assert metrics.youden_threshold(Y, P) == pytest.approx(0.5)
        assert metrics.choose_threshold(Y, P, OperatingPoint()) == metrics.youden_threshold(Y, P)

    @pytest.mark.parametrize(
        ("rule", "threshold", "sensitivity", "specificity"),
        [
            ("sensitivity:0.6", 0.6, 0.6, 0.8),  # 3 of 5 found at 0.6: the highest cut that finds 60 %
            ("sensitivity:0.75", 0.35, 0.8, 0.6),  # 0.75 needs 4 of 5: no cut gives exactly 0.75
            ("sensitivity:0.9", 0.05, 1.0, 0.0),  # every positive, and the lowest-scored one is at 0.05
            ("specificity:0.8", 0.6, 0.6, 0.8),  # the lowest cut that keeps 4 of 5 negatives uncalled
            ("specificity:0.6", 0.35, 0.8, 0.6),
        ],
    )
    def test_a_target_rule_takes_the_cut_that_just_reaches_it(
        self, rule, threshold, sensitivity, specificity
    ):
        y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
        p = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.6, 0.7, 0.8, 0.9, 0.05])
        cut = metrics.choose_threshold(y, p, OperatingPoint.parse(rule))
        at = metrics.at_threshold(y, p, cut)
        assert (cut, at["sensitivity"], at["specificity"]) == pytest.approx(
            (threshold, sensitivity, specificity)
        )

    @pytest.mark.parametrize(
        "text", ["sens:0.9", "sensitivity", "youden:0.5", "sensitivity:1", "specificity:x"]
    )
    def test_an_operating_point_that_is_not_one_says_what_is_allowed(self, text):
        with pytest.raises(ValueError, match="give youden, sensitivity:T or specificity:T"):
            OperatingPoint.parse(text)

    def test_a_target_reached_on_few_positives_is_warned_with_its_exact_interval(self):
        point = OperatingPoint.parse("sensitivity:0.9")
        few = np.r_[np.ones(20), np.zeros(60)], np.r_[np.linspace(0.3, 0.9, 20), np.linspace(0.0, 0.5, 60)]
        cut = metrics.choose_threshold(*few, point)
        warning = metrics.chosen_on_few(*few, cut, point)
        assert "(18 of 20, exact 95 % interval 0.68-0.99)" in warning
        many = np.repeat(few[0], 10), np.repeat(few[1], 10)  # 180 of 200: 0.86-0.94
        assert metrics.chosen_on_few(*many, metrics.choose_threshold(*many, point), point) is None
        assert metrics.chosen_on_few(*few, cut, OperatingPoint()) is None  # Youden sets no target

    def test_a_held_out_rate_whose_interval_leaves_out_the_target_is_warned(self):
        rates, intervals = {"sensitivity": 0.81}, {"sensitivity": [0.76, 0.86]}
        missed = metrics.target_missed(
            OperatingPoint.parse("sensitivity:0.9"), rates, intervals, "out of fold"
        )
        assert missed.startswith("out of fold: sensitivity 0.81 [0.76, 0.86] at the threshold chosen for")
        assert (
            metrics.target_missed(OperatingPoint.parse("sensitivity:0.85"), rates, intervals, "here") is None
        )
        assert metrics.target_missed(OperatingPoint(), rates, intervals, "here") is None

    def test_an_operating_point_reads_back_as_written(self):
        point = OperatingPoint.parse(" Sensitivity:0.90 ")
        assert (str(point), point.text) == ("sensitivity:0.9", "sensitivity ≥ 0.9")
        assert OperatingPoint.parse(str(point)) == point and str(OperatingPoint()) == "youden"

    def test_metrics_at_a_threshold(self):
        m = metrics.at_threshold(Y, P, 0.5)
        assert m["confusion"] == {"tn": 3, "fp": 1, "fn": 0, "tp": 2}
        assert m["sensitivity"] == 1.0 and m["specificity"] == 0.75 and m["ppv"] == pytest.approx(2 / 3)
        assert m["npv"] == 1.0 and m["accuracy"] == pytest.approx(5 / 6)

    def test_a_threshold_above_every_score_leaves_ppv_undefined_quietly(self, recwarn):
        ci = metrics.rates_with_ci(Y, P, threshold=0.95)  # nobody called positive: PPV has no value
        assert np.isnan(ci["ppv"]).all()
        assert ci["sensitivity"][0] == 0.0 and ci["specificity"][1] == 1.0
        ppv = metrics.at_threshold(Y, P, 0.95)["ppv"]
        assert metrics.rate_text(ppv, ci["ppv"]) == "n/a"  # printed and reported: not "nan [nan, nan]"
        assert metrics.rate_text(0.5, [0.25, 0.75]) == "0.50 [0.25, 0.75]"
        extreme = metrics.calibration_with_ci(Y, np.where(Y == 1, 1.0, 0.0), n=50)  # perfectly separated
        assert np.isfinite(extreme["intercept"])
        assert not [
            w for w in recwarn if issubclass(w.category, RuntimeWarning)
        ]  # nothing for a user to puzzle over

    def test_a_rate_of_one_on_few_breasts_gets_the_exact_interval_not_one_of_no_width(self):
        """10 of 10 positives found: the bootstrap finds 1.0 in every resample; the exact binomial interval
        says how little 10 breasts tell."""
        y = np.r_[np.zeros(30, int), np.ones(10, int)]
        ci = metrics.rates_with_ci(y, np.r_[np.linspace(0, 0.4, 30), np.linspace(0.6, 1, 10)], 0.5)
        assert ci["sensitivity"] == [pytest.approx(0.6915, abs=1e-4), 1.0]  # Clopper-Pearson, 10 / 10
        assert ci["specificity"] == [pytest.approx(0.8843, abs=1e-4), 1.0]  # 30 / 30
        assert ci["sensitivity"][0] == pytest.approx(0.025 ** (1 / 10))  # its lower end, in closed form

    def test_a_rate_interval_covers_both_the_bootstrap_and_the_exact_one(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 300)
        p = 0.3 * y + rng.random(300)
        ci = metrics.rates_with_ci(y, p, 0.6)
        found, positives = int(((p >= 0.6) & (y == 1)).sum()), int(y.sum())
        exact = binomtest(found, positives).proportion_ci(0.95, "exact")
        assert ci["sensitivity"][0] <= exact.low < found / positives < exact.high <= ci["sensitivity"][1]
        assert ci["sensitivity"][1] - ci["sensitivity"][0] < 0.2  # 150 positives still tell a lot

    def test_brier_score(self):
        assert metrics.brier(np.array([0, 1]), np.array([0.0, 0.5])) == pytest.approx(0.125)


class TestBinnedCalibration:
    def test_bins_of_a_calibrated_model_hold_their_observed_fraction_and_twins_widen_them(self):
        rng = np.random.default_rng(5)
        p = rng.uniform(0.05, 0.95, 200)
        y = (rng.random(200) < p).astype(int)  # calibrated by construction
        binned = metrics.binned_calibration(y, p)
        assert binned["n"].sum() == 200 and len(binned["n"]) == 5
        assert np.all(np.diff(binned["predicted"]) > 0)
        assert np.all((binned["low"] <= binned["observed"]) & (binned["observed"] <= binned["high"]))
        assert np.all(np.abs(binned["observed"] - binned["predicted"]) < binned["high"] - binned["low"])
        # each breast's twin in the same patient: no more information, as wide an interval by patient
        twins = np.repeat(np.arange(200), 2)
        by_patient = metrics.binned_calibration(np.repeat(y, 2), np.repeat(p, 2), twins)
        by_breast = metrics.binned_calibration(np.repeat(y, 2), np.repeat(p, 2))
        width = lambda b: np.mean(b["high"] - b["low"])  # noqa: E731
        assert width(by_patient) > 1.25 * width(by_breast)
        assert width(by_patient) == pytest.approx(width(binned), rel=0.15)

    def test_a_bin_without_positives_gets_the_exact_interval_not_one_of_no_width(self):
        p = np.r_[np.linspace(0.01, 0.05, 20), np.linspace(0.5, 0.9, 20)]
        y = np.r_[np.zeros(20, int), np.ones(10, int), np.zeros(10, int)]
        binned = metrics.binned_calibration(y, p, bins=2)
        assert binned["observed"][0] == 0 and binned["low"][0] == 0
        assert binned["high"][0] == pytest.approx(1 - 0.025 ** (1 / 20))  # Clopper-Pearson, 0 of 20

    def test_the_figure_draws_each_bin_with_its_interval(self):
        from mammofuse.evaluation.plots import calibration_figure

        rng = np.random.default_rng(2)
        p = rng.random(80)
        y = (rng.random(80) < p).astype(int)
        fig = calibration_figure({"model": (y, p)}, groups=np.repeat(np.arange(40), 2))
        ax = fig.axes[0]
        assert len(ax.containers) == 1 and len(ax.containers[0].lines[0].get_xdata()) == 5  # 5 bins
        assert "slope" in ax.get_legend().get_texts()[0].get_text()


class TestNetBenefit:
    def test_hand_computed_and_a_resample_equals_the_breasts_it_draws(self):
        y = np.array([1, 0, 1, 0, 0])
        p = np.array([0.9, 0.6, 0.3, 0.2, 0.1])
        t = np.array([0.25, 0.5])
        # t = 0.25: calls 0.9, 0.6, 0.3 -> TP 2, FP 1: (2 - 1 x 1/3) / 5; t = 0.5: TP 1, FP 1: (1 - 1) / 5
        assert metrics.net_benefit(y, p, t) == pytest.approx([(2 - 1 / 3) / 5, 0.0])
        weights = np.array([[2, 0, 1, 1, 0], [1, 1, 1, 1, 1]])  # breast 0 drawn twice, 1 and 4 not
        drawn = np.repeat(np.arange(5), weights[0])
        curves = metrics.net_benefit(y, p, t, weights)
        assert curves.shape == (2, 2)
        assert curves[0] == pytest.approx(metrics.net_benefit(y[drawn], p[drawn], t))
        assert curves[1] == pytest.approx(metrics.net_benefit(y, p, t))

    def test_the_band_holds_the_curve_and_narrows_with_more_patients(self):
        rng = np.random.default_rng(0)
        t = np.linspace(0.05, 0.5, 10)

        def width(n):
            y = (rng.random(n) < 0.3).astype(int)
            p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)
            low, high = metrics.net_benefit_band(y, p, t, groups=np.arange(n))
            curve = metrics.net_benefit(y, p, t)
            assert np.all(low <= curve + 1e-12) and np.all(curve <= high + 1e-12)
            return float(np.mean(high - low))

        assert width(2000) < width(100) / 2


class TestAveragePrecision:
    def test_sklearns_value_with_ties_and_a_resample_equals_the_breasts_it_draws(self):
        from sklearn.metrics import average_precision_score

        rng = np.random.default_rng(3)
        y = rng.integers(0, 2, 60)
        p = rng.integers(0, 6, 60) / 6  # many ties
        assert metrics.average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
        weights = rng.integers(0, 3, (3, 60))
        for row, ap in zip(weights, metrics.average_precision(y, p, weights), strict=True):
            drawn = np.repeat(np.arange(60), row)
            assert ap == pytest.approx(average_precision_score(y[drawn], p[drawn]), abs=1e-12)

    def test_a_random_ranking_scores_the_prevalence_inside_its_interval_and_the_figure_says_both(self):
        from mammofuse.evaluation.plots import pr_figure

        rng = np.random.default_rng(4)
        y = (rng.random(400) < 0.25).astype(int)
        noise, signal = rng.random(400), y + rng.normal(0, 0.7, 400)
        ap, low, high = metrics.average_precision_with_ci(y, noise, np.repeat(np.arange(200), 2))
        assert low < y.mean() < high and low < ap < high and high - low < 0.15
        assert metrics.average_precision_with_ci(y, signal)[1] > high  # a model that ranks: above chance
        few = metrics.average_precision_with_ci(y[:12], noise[:12])  # too few positives for an interval
        assert np.isnan(few[1]) and np.isnan(few[2])
        legend = pr_figure({"model": (y, signal)}).axes[0].get_legend().get_texts()
        ap, low, high = metrics.average_precision_with_ci(y, signal)
        assert legend[0].get_text() == f"model (AP {ap:.2f} [{low:.2f}, {high:.2f}])"
        assert legend[1].get_text() == f"prevalence {y.mean():.2f} (AP of a random ranking)"
