"""The sample size for a validation: every formula against validations simulated from a calibrated model."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from mammofuse.cli import main
from mammofuse.evaluation import metrics
from mammofuse.evaluation.samplesize import Anticipated, auc_width, needed, oe_width, sample_size, slope_width
from mammofuse.problems import DataError

Z = 1.959963984540054


@pytest.fixture(scope="module")
def simulated():
    """A calibrated model's logits (normal, about 27 % positive), and 400 validations of 300 breasts."""
    rng = np.random.default_rng(0)
    population = rng.normal(-1.3, 1.2, 200_000)
    y_population = rng.random(population.size) < expit(population)
    anticipated = Anticipated(
        population, float(expit(population).mean()), metrics.auc(y_population, population)
    )
    n, draws = 300, []
    for _ in range(400):
        lp = rng.choice(population, n)
        y = (rng.random(n) < expit(lp)).astype(float)
        slope = metrics.logistic_fit(y, lp, np.ones(n))[1]
        draws.append((metrics.auc(y, lp), slope, np.log(y.mean() / expit(lp).mean())))
    return anticipated, n, np.array(draws)


class TestFormulas:
    @pytest.mark.parametrize(("column", "width"), [(0, auc_width), (1, slope_width), (2, oe_width)])
    def test_each_width_is_that_of_simulated_validations(self, simulated, column, width):
        anticipated, n, draws = simulated
        sd = draws[:, column].std(ddof=1)
        # O/E's interval is exp(+-z SE) around 1
        expected = 2 * np.sinh(Z * sd) if width is oe_width else 2 * Z * sd
        assert width(n, anticipated) == pytest.approx(expected, rel=0.15)

    def test_the_breasts_needed_are_the_fewest_that_reach_the_target(self, simulated):
        anticipated = simulated[0]
        for width, target in ((auc_width, 0.1), (slope_width, 0.2), (oe_width, 0.2)):
            n = needed(width, target, anticipated)
            assert width(n, anticipated) <= target < width(n - 1, anticipated)

    def test_a_target_out_of_reach_says_so(self, simulated):
        assert needed(slope_width, 1e-6, simulated[0]) is None


class TestAnticipated:
    def test_the_held_out_logits_are_shifted_to_the_sites_prevalence(self):
        rng = np.random.default_rng(1)
        labels = rng.random(200) < 0.3
        probabilities = expit(rng.normal(-1, 1, 200) + labels)
        a = Anticipated.from_held_out(labels, probabilities, prevalence=0.1, auc=0.7)
        assert expit(a.logits).mean() == pytest.approx(0.1) and a.prevalence == 0.1
        assert np.std(a.logits) == pytest.approx(np.std(logit(probabilities)))  # shifted, not stretched
        rarer = sample_size(a, {"O/E": 0.2}, [])
        commoner = sample_size(Anticipated.from_held_out(labels, probabilities, 0.3, 0.7), {"O/E": 0.2}, [])
        assert rarer.loc[0, "breasts"] > commoner.loc[0, "breasts"]  # a rarer outcome needs more breasts
        assert rarer.loc[0, "positives"] == pytest.approx(rarer.loc[0, "breasts"] * 0.1, abs=1)

    def test_one_class_is_a_clear_error(self):
        with pytest.raises(DataError, match="one class"):
            Anticipated.from_held_out(np.zeros(10), np.full(10, 0.2), None, 0.7)


class TestCommand:
    def test_a_runs_test_split_anticipates_and_given_breasts_get_their_widths(self, trained_master, capsys):
        assert main(["samplesize", str(trained_master), "--breasts", "100", "1000"]) == 0
        record = json.loads((trained_master / "samplesize.json").read_text())
        test = pd.read_csv(trained_master / "predictions.csv").query("split == 'test'")
        assert record["held_out"] == {"breasts": len(test), "positives": int(test["label"].sum())}
        assert record["auc"] == pytest.approx(metrics.auc(test["label"], test["probability"]))
        assert [c["criterion"] for c in record["criteria"]] == ["AUC", "calibration slope", "O/E"]
        for c in record["criteria"]:
            assert c["width at 1000"] < c["width at 100"]
            assert (c["breasts"] > 100) == (c["width at 100"] > c["target_width"])
        out = capsys.readouterr().out
        most = max(c["breasts"] for c in record["criteria"])
        assert f"sample size: {most:,} labelled breasts" in out and "patient" not in out.lower()
        card = (trained_master / "bundle" / "model_card.md").read_text()  # the model travels with it
        assert f"needs about {most:,} labelled breasts" in card

    def test_a_test_split_of_a_handful_of_breasts_is_said_to_be_too_few_to_anticipate_from(
        self, trained_master, tmp_path, capsys
    ):
        run = tmp_path / "run"
        shutil.copytree(trained_master, run)
        every = pd.read_csv(run / "predictions.csv")
        test = every[every["split"] == "test"]
        kept = pd.concat([test[test["label"] == 1].head(1), test[test["label"] == 0].head(5)])
        pd.concat([every[every["split"] != "test"], kept]).to_csv(run / "predictions.csv", index=False)
        assert main(["samplesize", str(run)]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "(6 breasts, 1 positive)" in out and "fewer than 5 held-out breasts of a class: too few" in out
        capsys.readouterr()
        assert main(["samplesize", str(trained_master)]) == 0
        assert "too few" not in capsys.readouterr().out

    def test_a_cross_validation_anticipates_its_pooled_auc_and_a_given_prevalence(self, cv_master):
        assert main(["samplesize", str(cv_master), "--prevalence", "0.1"]) == 0
        record = json.loads((cv_master / "samplesize.json").read_text())
        pooled = json.loads((cv_master / "metrics.json").read_text())["model"]["auc"]["auc"]
        assert record["auc"] == pytest.approx(pooled) and record["prevalence"] == 0.1
        assert record["source"].startswith("the out-of-fold breasts")

    def test_a_prevalence_outside_0_to_1_is_refused(self, trained_master, capsys):
        with pytest.raises(SystemExit):
            main(["samplesize", str(trained_master), "--prevalence", "1.5"])
        assert "must be between 0 and 1, found 1.5" in capsys.readouterr().err
