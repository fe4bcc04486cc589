"""The learning curve: shares of each fold's training patients, on identical folds and held-out breasts."""

import numpy as np
import pandas as pd
import pytest

from mammofuse.cli import main
from mammofuse.config import ConfigError, load_config
from mammofuse.data.splits import TEST, TRAIN, VAL, thin_training
from mammofuse.runs import Run
from tests.training.fixtures import train_variant


def splits_of(patients: int, seed: int = 0) -> pd.DataFrame:
    """A split of `patients` patients with one or two breasts each, about a quarter positive."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        part = rng.choice([TRAIN, VAL, TEST], p=[0.8, 0.1, 0.1])
        for side in ("L", "R")[: rng.choice([1, 2], p=[0.7, 0.3])]:
            rows.append(
                {"patient_id": f"P{p:03d}", "side": side, "label": int(rng.random() < 0.25), "split": part}
            )
    return pd.DataFrame(rows)


def label_mix(part: pd.DataFrame) -> pd.Series:
    return part.groupby("patient_id")["label"].agg(lambda labels: tuple(sorted(labels))).value_counts()


class TestThinTraining:
    def test_shares_are_nested_whole_patients_with_each_label_mix_in_its_share(self):
        splits = splits_of(400)
        train = splits[splits["split"] == TRAIN]
        kept_before: set[str] = set()
        for share in (0.2, 0.5, 0.8):
            thinned = thin_training(splits, share, seed=5)
            pd.testing.assert_frame_equal(  # validation and test whole
                thinned[thinned["split"] != TRAIN].reset_index(drop=True),
                splits[splits["split"] != TRAIN].reset_index(drop=True),
            )
            kept = thinned[thinned["split"] == TRAIN]
            patients = set(kept["patient_id"])
            assert kept_before <= patients  # a larger share keeps every patient of a smaller one
            kept_before = patients
            whole = train[train["patient_id"].isin(patients)]
            assert len(whole) == len(kept)  # both breasts of a drawn patient, never one
            mixes, everyone = label_mix(kept), label_mix(train)
            for mix, n in everyone.items():
                assert mixes.get(mix, 0) == max(1, round(share * n))
            assert kept["label"].sum() == pytest.approx(share * train["label"].sum(), abs=3)

    def test_the_whole_share_and_another_seed(self):
        splits = splits_of(100)
        assert thin_training(splits, 1.0, seed=0) is splits
        a, b = (set(thin_training(splits, 0.5, seed=s)["patient_id"]) for s in (0, 1))
        assert a != b

    def test_a_share_outside_0_to_1_is_a_config_error(self, tmp_path):
        config = tmp_path / "bad.toml"
        config.write_text("[data]\ntrain_fraction = 0\n")
        with pytest.raises(ConfigError, match="train_fraction"):
            load_config(config)


def curve(cohort, *extra, presets: tuple[str, ...] = ()) -> int:
    """The learning curve at half the training patients on cv_master's folds (3 x 2), 1 epoch in full; with
    `presets`, those setups' curves instead of the fast preset's."""
    chosen = ["--presets", *presets] if presets else ["--preset", str(cohort.parent / "fast.toml")]
    shares = ["--fractions", "0.5", "--folds", "3", "--repeats", "2"]
    return main(["curve", str(cohort / "cohort.toml"), *chosen, "--epochs", "1", *shares, *extra])


class TestCurve:
    def test_every_share_is_scored_on_the_same_breasts_and_the_finished_cv_is_reused(self, cv_copy, capsys):
        cohort, full = cv_copy
        checkpoint = Run(full).fold(0, 0).checkpoint("best")
        trained = checkpoint.stat().st_mtime_ns
        assert curve(cohort) == 0
        out = capsys.readouterr().out
        assert checkpoint.stat().st_mtime_ns == trained  # the plain cv's folds kept, not trained again
        assert out.count("finished before, kept") == 6
        half = Run(full.with_name("fast-cv-train50"))
        assert not half.bundle.exists() and "no fold ensemble" in out  # a model of half the data
        for repeat in range(2):
            for fold in range(3):
                a, b = (run.fold(repeat, fold).read_data() for run in (Run(full), half))
                for part in (VAL, TEST):  # what chose the epoch and what was scored: identical
                    keys_a, keys_b = (d.loc[d["split"] == part, ["patient_id", "side"]] for d in (a, b))
                    pd.testing.assert_frame_equal(
                        keys_a.reset_index(drop=True), keys_b.reset_index(drop=True)
                    )
                train_a, train_b = (set(d.loc[d["split"] == TRAIN, "patient_id"]) for d in (a, b))
                assert train_b < train_a and len(train_b) == pytest.approx(len(train_a) / 2, abs=3)
        work = cohort / "work"
        table = pd.read_csv(work / "curve.csv")
        assert table["train_fraction"].tolist() == [0.5, 1.0] and set(table["preset"]) == {"fast"}
        assert "versus" not in table
        assert table["epochs"].tolist() == [2, 1]  # half the breasts, as many optimizer steps as the whole
        assert len(half.fold(0, 0).read_epochs()) == 2
        assert table["breasts"].nunique() == 1 and table["train_breasts"].is_monotonic_increasing
        assert table.loc[1, ["step", "step_low", "step_high", "step_p"]].notna().all()
        assert pd.isna(table.loc[0, "step"]) and table["clinical_auc"].notna().all()
        assert table["train_auc"].between(0, 1).all()  # the folds' apparent AUC, as the cv page gives it
        assert table.loc[1, "train_auc"] == pytest.approx(Run(full).read_cv_evaluation().model.train_auc)
        html = (work / "curve.html").read_text()
        assert "Learning curve of fast" in html and "data:image/png;base64," in html
        assert "What the last step says" in html and "runs/fast-cv-train50" in html
        assert "learning curve (identical folds, out of fold)" in out and "training breasts per fold" in out
        assert main(["report", str(half.dir)]) == 0  # a share's own page: every breast, held out once
        patients = pd.read_csv(full / "folds.csv", dtype={"patient_id": str}).query("repeat == 0")
        counted = f"{len(patients)} breasts of {patients['patient_id'].nunique()} patients analysed"
        assert counted in half.report.read_text() and "not drawn" not in half.report.read_text()
        assert "None: its fold models learnt from 50% of each fold" in half.report.read_text()  # no bundle
        assert curve(cohort) == 0  # again: nothing trained
        assert capsys.readouterr().out.count("finished before, kept") == 12
        assert curve(cohort, "--budget", "epochs") == 2
        assert "train.epochs: 2 -> 1" in capsys.readouterr().out  # that share was trained otherwise
        assert main(["runs", str(work)]) == 0  # the overview names the share and the curve's page
        listed = capsys.readouterr().out
        assert "cv on 50%" in listed and "fast-cv-train50" in listed
        assert "curve.html (mammofuse curve" in listed

    def test_two_setups_curves_are_compared_share_by_share_on_the_same_breasts(self, cv_copy, capsys):
        cohort, full = cv_copy
        variant = cohort.parent / "dropout.toml"
        variant.write_text(f'extends = "{cohort.parent / "fast.toml"}"\n[model]\ndropout = 0.5\n')
        setups = (str(cohort.parent / "fast.toml"), str(variant))
        assert curve(cohort, presets=setups) == 0
        out = " ".join(capsys.readouterr().out.split())
        table = pd.read_csv(cohort / "work" / "curve.csv")
        assert table["preset"].tolist() == ["fast", "fast", "dropout", "dropout"]
        assert table.groupby("preset")["breasts"].first().nunique() == 1  # both on the same breasts
        fast, other = (
            table[table["preset"] == name].set_index("train_fraction") for name in table["preset"].unique()
        )
        assert fast["versus"].isna().all() and other["versus"].notna().all()
        # the difference at each share is the two curves' AUCs apart; its change since the smallest share
        assert other["versus"].to_numpy() == pytest.approx((other["auc"] - fast["auc"]).to_numpy())
        assert other.loc[1.0, "change"] == pytest.approx(other.loc[1.0, "versus"] - other.loc[0.5, "versus"])
        assert other.loc[1.0, "change_low"] <= other.loc[1.0, "change"] <= other.loc[1.0, "change_high"]
        assert pd.isna(other.loc[0.5, "change"])
        # the reference's finished cross-validation reused; the variant's folds are the same folds
        assert out.count("finished before, kept") == 6
        folds = [
            pd.read_csv(cohort / "work" / "runs" / f"{name}-cv" / "folds.csv") for name in ("fast", "dropout")
        ]
        pd.testing.assert_frame_equal(*folds)
        assert "dropout minus fast:" in out and "from the smallest share to the whole it changed by" in out
        html = " ".join((cohort / "work" / "curve.html").read_text().split())
        assert "Learning curves of fast, dropout" in html and "minus fast [95 % CI]" in html
        assert "What the last step says of dropout:" in html and "Setups compared:" in html
        assert curve(cohort, presets=(setups[0], setups[0])) == 2  # one setup twice
        assert "--presets names a setup twice" in capsys.readouterr().out

    def test_a_run_on_half_the_training_patients_says_so_in_its_flow(self, ready):
        run = Run(train_variant(ready, "half", "[data]\ntrain_fraction = 0.5\n"))
        splits, data = pd.read_csv(ready / "work" / "splits.csv"), run.read_data()
        for part in (VAL, TEST):
            assert (data["split"] == part).sum() == (splits["split"] == part).sum()
        not_drawn = (splits["split"] == TRAIN).sum() - (data["split"] == TRAIN).sum()
        assert not_drawn == pytest.approx((splits["split"] == TRAIN).sum() / 2, abs=4)
        assert main(["evaluate", str(run.dir)]) == 0 and main(["report", str(run.dir)]) == 0
        train_variant(ready, "half", "[data]\ntrain_fraction = 0.5\n")  # again: finished, not refused
        html = run.report.read_text()
        assert f"training patients not drawn (data.train_fraction = 0.5): {not_drawn}" in html
