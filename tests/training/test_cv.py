import json
import shutil
import tomllib

import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import ConfigError
from mammofuse.deploy.bundle import ensemble_problem, load_bundle
from mammofuse.evaluation.cv import pool_folds
from mammofuse.models.stacking import ClinicalBaseline
from mammofuse.problems import DataError
from mammofuse.runs import Run
from tests.training.fixtures import cv


class TestOutOfFold:
    def test_every_breast_is_scored_once_per_repeat_by_a_model_that_never_saw_its_patient(self, cv_master):
        oof = pd.read_csv(cv_master / "oof.csv", dtype={"patient_id": str})
        assert {
            "patient_id",
            "side",
            "label",
            "repeat",
            "fold",
            "probability",
            "clinical_probability",
        } <= set(oof.columns)
        per_repeat = oof.groupby("repeat").apply(lambda g: g[["patient_id", "side"]].duplicated().sum())
        assert (per_repeat == 0).all() and oof.groupby("repeat").size().nunique() == 1
        assert (oof.groupby(["repeat", "patient_id"])["fold"].nunique() == 1).all()
        for (repeat, fold), held in oof.groupby(["repeat", "fold"]):
            data = pd.read_csv(
                cv_master / "folds" / f"r{repeat}f{fold}" / "data.csv", dtype={"patient_id": str}
            )
            trained_on = set(data.loc[data["split"] != "test", "patient_id"])
            assert not trained_on & set(held["patient_id"])
            assert set(data.loc[data["split"] == "test", "patient_id"]) == set(held["patient_id"])

    def test_metrics_hold_the_pooled_auc_the_folds_the_baseline_and_the_difference(self, cv_master):
        result = Run(cv_master).read_cv_evaluation()
        assert (result.folds, result.repeats) == (3, 2) and result.model.auc.unit == "patient"
        assert result.model.auc.low <= result.model.auc.auc <= result.model.auc.high
        assert len(result.model.fold_aucs) == 6 and result.baseline is not None
        assert result.comparison is not None and 0 < result.comparison.p_value <= 1
        folds = [fold.read_evaluation() for fold in Run(cv_master).fold_runs()]
        for pooled, name in ((result.model, "model"), (result.baseline, "baseline")):
            apparent = [getattr(fold, name).train_auc for fold in folds]  # each fold model's
            assert pooled.fold_train_aucs == apparent
            assert pooled.optimism == pytest.approx(sum(pooled.fold_train_aucs) / 6 - pooled.auc.auc)
        oof = pd.read_csv(cv_master / "oof.csv")
        calls = (oof["probability"] >= oof["threshold"]).astype(int)
        assert result.model.at_threshold.confusion.tp == int(((calls == 1) & (oof["label"] == 1)).sum())

    def test_a_fold_scoring_on_another_scale_leaves_the_pooled_auc_as_it_is(self, cv_master, tmp_path):
        """One fold's logits halved and shifted down (another epoch chosen, another balancing): its own
        ranking is the same, and the pooled AUC, which ranks each fold on its validation breasts' scale, does
        not move; the AUC of the probabilities as scored does (that fold's breasts rank below the rest)."""
        run = tmp_path / "run"
        shutil.copytree(cv_master, run)
        before = Run(run).read_cv_evaluation()
        predictions = run / "folds" / "r0f1" / "predictions.csv"
        scored = pd.read_csv(predictions)
        logit = np.log(scored["probability"] / (1 - scored["probability"]))
        scored["probability"] = 1 / (1 + np.exp(-(0.5 * logit - 3)))  # val and held-out breasts alike
        scored.to_csv(predictions, index=False)
        after = pool_folds(Run(run), 3, 2)
        assert after.model.auc.auc == pytest.approx(before.model.auc.auc, abs=1e-12)
        assert after.comparison.difference == pytest.approx(before.comparison.difference, abs=1e-12)
        assert after.model.fold_aucs == pytest.approx(before.model.fold_aucs, abs=1e-12)
        assert after.model.auc_as_scored.auc != pytest.approx(before.model.auc_as_scored.auc, abs=1e-4)

    def test_the_report_of_a_run_pooled_before_the_one_scale_says_so(self, cv_master, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(cv_master, run)
        assert main(["report", str(run)]) == 0
        assert "standardised by the mean" in " ".join((run / "report.html").read_text().split())
        metrics = json.loads((run / "metrics.json").read_text())
        for part in ("model", "baseline"):
            del metrics[part]["auc_as_scored"]  # as an older mammofuse wrote it
        (run / "metrics.json").write_text(json.dumps(metrics))
        assert main(["report", str(run)]) == 0
        html = " ".join((run / "report.html").read_text().split())
        assert "ranks the probabilities as scored" in html and "standardised by the mean" not in html

    def test_the_report_shows_the_cross_validation(self, cv_master, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(cv_master, run)
        assert main(["report", str(run)]) == 0
        html = (run / "report.html").read_text()
        for text in (
            "Out-of-fold metrics",
            "pooled AUC [95 % CI]",
            "fold AUC mean ± sd",
            "What the images add",
            "Table 1: the breasts analysed",
            "Flow of breasts",
            "Decision curve",
            "Operating point",
            "calibration [95 % CI]",
            "fold 1",  # Table 1 and the flow by fold
            "How far each model overfits",
            "apparent AUC",
        ):
            assert text in html, text
        assert "patients analysed: fold 1 " in html and "fold 4" not in html  # 3 folds, as in Table 1
        assert '<td>2</td><td>3</td><td class="text">folds/r1f2</td>' in html  # the folds table's last row
        assert html.count("data:image/png;base64,") == 5  # flow, ROC, calibration, decision, overfitting
        trained = html[html.index("How it was trained") : html.index("<h2>Versions")]
        cpu = f"<td>CPU ({torch.backends.cpu.get_cpu_capability()})</td>"
        assert trained.count(cpu) == 1  # one setup trained every fold
        assert all(f"r{r}f{f}: from 1" in trained for r in (0, 1) for f in (0, 1, 2))


class TestResume:
    def test_an_interrupted_cv_resumes_at_the_fold_it_stopped_and_gives_the_same_predictions(
        self, cv_copy, capsys
    ):
        cohort, run = cv_copy
        before = pd.read_csv(run / "oof.csv")
        (run / "folds" / "r0f1" / "metrics.json").unlink()  # stopped after training, before scoring
        shutil.rmtree(run / "folds" / "r1f2")  # never started
        capsys.readouterr()
        assert cv(cohort, "--folds", "3", "--repeats", "2") == 0
        out = capsys.readouterr().out
        assert out.count("finished before, kept") == 4
        pd.testing.assert_frame_equal(pd.read_csv(run / "oof.csv"), before)

    def test_finished_folds_of_data_that_changed_since_are_not_pooled(self, cv_copy, capsys):
        cohort, _ = cv_copy
        manifest_csv = cohort / "work" / "manifest.csv"
        manifest = pd.read_csv(manifest_csv, dtype=str)
        manifest.loc[0, "age"] = "101"  # a clinical value corrected in the export since
        manifest.to_csv(manifest_csv, index=False)
        assert cv(cohort, "--folds", "3", "--repeats", "2") == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "was trained on other data than it is given now (1 with another clinical value" in out

    def test_other_folds_in_a_started_run_are_refused(self, cv_copy, capsys):
        cohort, _ = cv_copy
        assert cv(cohort, "--folds", "4") == 2
        assert "was started with other folds" in capsys.readouterr().out

    def test_a_damaged_folds_or_oof_table_is_named_and_the_folds_are_written_anew(self, cv_copy, capsys):
        """folds.csv follows from the cohort and the settings: damaged, it is written anew (not refused as
        "other folds") and the finished folds are kept; a damaged oof.csv is one line naming it."""
        cohort, run_dir = cv_copy
        folds, oof = run_dir / "folds.csv", run_dir / "oof.csv"
        before = folds.read_bytes()
        folds.write_text("<html>not a table</html>\n")
        assert cv(cohort, "--folds", "3", "--repeats", "2") == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"warning: {folds}: cannot be read (damaged since?): written anew" in out
        assert "was started with other folds" not in out and out.count("finished before, kept") == 6
        assert folds.read_bytes() == before
        oof.write_text("<html>not a table</html>\n")
        for command in ("samplesize", "report"):
            assert main([command, str(run_dir)]) == 2
            said = " ".join(capsys.readouterr().out.split())
            assert f"{oof}: not as `mammofuse cv` writes it" in said and "Traceback" not in said


class TestOperatingPoint:
    def test_another_operating_point_evaluates_the_folds_again_without_training_them(self, cv_copy, capsys):
        cohort, run = cv_copy
        weights = {f: (f / "checkpoints").stat().st_mtime_ns for f in (run / "folds").iterdir()}
        capsys.readouterr()
        assert cv(cohort, "--folds", "3", "--repeats", "2", "--operating-point", "specificity:0.8") == 0
        out = " ".join(capsys.readouterr().out.split())
        assert out.count("its thresholds chosen again (specificity ≥ 0.8)") == 6
        assert "each breast at its fold's threshold (specificity ≥ 0.8)" in out
        assert {f: (f / "checkpoints").stat().st_mtime_ns for f in weights} == weights  # nothing trained
        for fold in Run(run).fold_runs():
            scored = fold.read_predictions().query("split == 'val'")
            negative = scored[scored["label"] == 0]
            result = fold.read_evaluation()
            assert str(result.operating_point) == "specificity:0.8"
            for column, model in (("probability", result.model), ("baseline_probability", result.baseline)):
                cut = model.threshold  # the lowest cut at which 80 % of the negatives stay uncalled
                lower = negative.loc[negative[column] < cut, column]
                assert (negative[column] < cut).mean() >= 0.8 > (negative[column] < lower.max()).mean()
            assert any("validation negatives" in w and "exact 95 % interval" in w for w in result.warnings)
        pooled = Run(run).read_cv_evaluation()
        assert pooled.operating_point.text == "specificity ≥ 0.8"
        info = json.loads((run / "bundle" / "bundle.json").read_text())
        thresholds = {f.dir.name: f.read_evaluation().model.threshold for f in Run(run).fold_runs()}
        assert info["members"] == pytest.approx(thresholds)
        assert info["operating_point"] == {"rule": "specificity", "target": 0.8}
        assert (
            "validation part of its training folds (specificity ≥ 0.8)"
            in (run / "bundle" / "model_card.md").read_text()
        )
        assert main(["report", str(run)]) == 0
        html = " ".join((run / "report.html").read_text().split())
        assert "the lowest threshold whose specificity there reached 0.8" in html
        assert "the held-out specificity below, with its interval, is what to expect" in html
        assert cv(cohort, "--folds", "3", "--repeats", "2", "--operating-point", "specificity:0.8") == 0
        assert capsys.readouterr().out.count("finished before, kept") == 6

    def test_folds_evaluated_before_the_apparent_auc_existed_are_evaluated_again_not_trained(
        self, cv_copy, capsys
    ):
        cohort, run = cv_copy
        weights = {f: (f / "checkpoints").stat().st_mtime_ns for f in (run / "folds").iterdir()}
        for fold in Run(run).fold_runs():  # as an earlier mammofuse wrote them
            written = json.loads(fold.metrics.read_text())
            for part in ("model", "baseline"):
                del written[part]["train_auc"]
            fold.metrics.write_text(json.dumps(written))
        assert Run(run).fold(0, 0).read_evaluation().model.train_auc is None
        capsys.readouterr()
        assert cv(cohort, "--folds", "3", "--repeats", "2") == 0
        assert capsys.readouterr().out.count("evaluated again to measure its apparent AUC") == 6
        assert {f: (f / "checkpoints").stat().st_mtime_ns for f in weights} == weights  # nothing trained
        assert Run(run).read_cv_evaluation().model.train_auc is not None

    def test_folds_that_kept_an_early_epoch_are_counted_in_the_pooled_warnings(self, cv_master, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(cv_master, run)
        assert not any("kept an early epoch" in w for w in Run(run).read_cv_evaluation().warnings)
        fold = Run(run).fold(0, 1)  # as if it had trained 5 epochs and its first kept the best validation AUC
        epochs = pd.DataFrame({"epoch": range(1, 6), "val_auc": [0.7, 0.6, 0.6, 0.6, 0.6]})
        epochs.to_csv(fold.epochs, index=False)
        warnings = pool_folds(Run(run), 3, 2).warnings
        assert any(w.startswith("1 of 6 folds kept an early epoch by their validation AUC") for w in warnings)

    def test_folds_that_chose_their_thresholds_by_different_rules_are_not_pooled(self, cv_master, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(cv_master, run)
        assert main(["evaluate", str(run / "folds" / "r0f1"), "--operating-point", "sensitivity:0.9"]) == 0
        with pytest.raises(DataError, match=r"different rules \(sensitivity:0.9, youden\)"):
            pool_folds(Run(run), 3, 2)


class TestFoldEnsemble:
    def test_predict_averages_the_fold_models(self, cv_master, tmp_path):
        bundle = load_bundle(cv_master / "bundle")
        info = json.loads((cv_master / "bundle" / "bundle.json").read_text())
        assert info["kind"] == "fold ensemble" and len(bundle.members) == 6
        assert bundle.threshold == pytest.approx(np.mean(list(info["members"].values())))
        cohort = cv_master.parents[2]
        out = tmp_path / "pred.csv"
        argv = ["predict", str(cv_master / "bundle"), "--images", str(cohort / "dicom")]
        assert main([*argv, "--clinical", str(cohort / "clinical.csv"), "--out", str(out)]) == 0
        pred = pd.read_csv(out, dtype={"patient_id": str}).dropna(subset=["probability"])
        row = pred.iloc[0]
        data = Run(cv_master / "folds" / "r0f0").read_data()
        breast = data[(data["patient_id"] == row["patient_id"]) & (data["side"] == row["side"])]
        from mammofuse.imaging.cache import load_entry

        x = [torch.from_numpy(load_entry(breast.iloc[0][f"{v}_cache"]))[None, None] for v in ("cc", "mlo")]
        probs = []
        for name in info["members"]:
            fold = Run(cv_master / "folds" / name)
            clinical = torch.from_numpy(fold.read_encoder().transform(breast))
            with torch.no_grad():
                probs.append(float(torch.softmax(fold.read_net()(*x, clinical), 1)[0, 1]))
        assert row["probability"] == pytest.approx(np.mean(probs), abs=1e-5)
        assert row["spread"] == pytest.approx(np.std(probs), abs=1e-5) and row["spread"] > 0

    def test_the_ensembles_clinical_baseline_averages_the_folds_and_old_folds_get_theirs(
        self, cv_copy, tmp_path, capsys
    ):
        cohort, run = cv_copy
        kept = {f.name: (f / "baseline.json").read_text() for f in (run / "folds").iterdir()}
        for fold in kept:
            (run / "folds" / fold / "baseline.json").unlink()  # folds evaluated before runs kept it
        assert cv(cohort, "--folds", "3", "--repeats", "2") == 0
        assert {f: (run / "folds" / f / "baseline.json").read_text() for f in kept} == kept
        out = tmp_path / "site2" / "pred.csv"
        argv = ["predict", str(run / "bundle"), "--images", str(cohort / "dicom"), "--out", str(out)]
        argv += ["--clinical", str(cohort / "clinical.csv"), "--labels", str(cohort / "labels.csv")]
        assert main(argv) == 0
        pred = pd.read_csv(out, dtype={"patient_id": str}).dropna(subset=["probability"])
        row = pred.iloc[0]
        breast = Run(run / "folds" / "r0f0").read_data()
        breast = breast[(breast["patient_id"] == row["patient_id"]) & (breast["side"] == row["side"])]
        clinical = []
        for name in kept:
            fold = Run(run / "folds" / name)
            model = ClinicalBaseline.model_validate_json(fold.baseline.read_text())
            clinical.append(model.apply(fold.read_encoder().transform(breast))[0])
        assert row["clinical_probability"] == pytest.approx(np.mean(clinical))
        result = json.loads((out.parent / "validation.json").read_text())
        assert result["kind"] == "fold ensemble" and result["internal"] == "pooled out-of-fold"
        assert result["baseline"]["n"] == result["model"]["n"] == len(pred)


class TestNested:
    def test_each_fold_tunes_on_its_training_folds_alone_and_trains_with_its_choice(self, ready, capsys):
        assert cv(ready, "--folds", "2", "--tune", "2") == 0
        run = Run(ready / "work" / "runs" / "fast-tuned-cv")
        oof = pd.read_csv(run.oof, dtype={"patient_id": str})
        space = set(run.read_tuning()["space"])
        for fold in run.fold_runs():
            held_out = set(oof.loc[oof["fold"] == int(fold.dir.name[-1]), "patient_id"])
            trials = sorted(fold.study.glob("trial-*"))
            assert len(trials) == 2
            for trial in trials:  # no trial trained or was scored on a breast of the held-out fold
                data = pd.read_csv(trial / "data.csv", dtype={"patient_id": str})
                assert set(data["split"]) == {"train", "val"} and not held_out & set(data["patient_id"])
            best = tomllib.loads((fold.study / "best.toml").read_text())
            chosen = fold.read_config()
            assert {f"{section}.{name}" for section in best for name in best[section]} == space
            for section, values in best.items():
                for name, value in values.items():
                    assert getattr(getattr(chosen, section), name) == value  # trained with the choice
        assert run.bundle.is_dir() and main(["report", str(run.dir)]) == 0
        html = " ".join(run.report.read_text().split())
        assert "Nested cross-validation." in html and "settings chosen" in html
        capsys.readouterr()
        assert cv(ready, "--folds", "2", "--tune", "2") == 0  # finished: nothing tuned or trained again
        out = capsys.readouterr().out
        assert out.count("finished before, kept") == 2 and "trial 0" not in out
        assert cv(ready, "--folds", "2", "--run", "fast-tuned-cv") == 2  # not as a plain one
        out = " ".join(capsys.readouterr().out.split())
        assert "was started as a nested cross-validation (2 trials per fold over" in out

    def test_a_search_space_without_tune_is_refused(self, ready, capsys):
        assert cv(ready, "--folds", "2", "--space", "space.toml") == 2
        assert "--space is the search space of nested cross-validation" in capsys.readouterr().out

    def test_preprocessing_cannot_be_tuned_per_fold(self):
        from mammofuse.tuning.tune import Range, Tuning

        with pytest.raises(ConfigError, match="cannot tune preprocess.margin: its folds share one"):
            Tuning(2, {"preprocess.margin": Range(low=0.0, high=0.1)})

    def test_folds_tuned_to_other_networks_make_no_fold_ensemble(self, cv_master, tmp_path):
        run_dir = tmp_path / "cv"
        shutil.copytree(cv_master, run_dir)
        assert ensemble_problem(run_dir) is None
        config = run_dir / "folds" / "r1f2" / "config.toml"
        config.write_text(config.read_text().replace('backbone = "tiny_cnn"', 'backbone = "resnet18"'))
        assert "the tuned folds r1f2 chose network settings other than" in ensemble_problem(run_dir)


class TestBadInput:
    def test_more_folds_than_patients_of_a_class_is_a_clear_error(self, ready, capsys):
        assert cv(ready, "--folds", "200") == 2
        out = " ".join(capsys.readouterr().out.split())
        assert out.startswith("error: 200 folds need at least 200 patients of each class")  # no header
        assert not list((ready / "work" / "runs").glob("*"))  # nor a run folder


class TestCompare:
    def test_a_setup_or_regions_file_named_wrong_stops_the_command_before_any_setup_trains(
        self, ready, capsys
    ):
        """compare and curve trained every setup named before a wrong one (hours on a real cohort), then
        stopped on it; a regions file that was not there stopped compare after every setup had trained."""
        runs = ready / "work" / "runs"

        def made() -> list:
            return sorted(runs.iterdir()) if runs.exists() else []

        before = made()
        cohort, fast = str(ready / "cohort.toml"), str(ready.parent / "fast.toml")
        for command in ("compare", "curve"):
            assert main([command, cohort, "--presets", fast, "no_such_preset", "--folds", "3"]) == 2
            assert "unknown preset 'no_such_preset'" in capsys.readouterr().out
            assert made() == before  # nothing trained
        missing = ready / "no_lesions.csv"
        assert main(["compare", cohort, "--presets", fast, "demo_cpu", "--regions", str(missing)]) == 2
        assert f"{missing}: regions file not found" in " ".join(capsys.readouterr().out.split())
        assert made() == before
        # starting weights that cannot be read (on an offline machine: ImageNet's, not in the hub cache)
        damaged = ready / "damaged.pth"
        damaged.write_bytes(b"not weights")
        variant = ready / "started.toml"
        variant.write_text(f'extends = "{fast}"\n[model]\npretrained = "{damaged}"\n')
        for command in ("compare", "curve"):
            assert main([command, cohort, "--presets", fast, str(variant), "--folds", "3"]) == 2
            assert f"{damaged}: not a weights file torch can load" in " ".join(
                capsys.readouterr().out.split()
            )
            assert made() == before
        # two files of one name from two folders: one run folder, so the second was refused after the first
        other = ready / "elsewhere" / "fast.toml"
        other.parent.mkdir()
        other.write_text(f'extends = "{fast}"\n[train]\nbatch_size = 4\n')
        for command in ("compare", "curve"):
            assert main([command, cohort, "--presets", fast, str(other), "--folds", "3"]) == 2
            shown = " ".join(capsys.readouterr().out.split())
            assert (
                "would both cross-validate into fast-cv" in shown
                and "give the files different names" in shown
            )
            assert made() == before
        assert main(["compare", cohort, "--presets", fast, fast, "--folds", "3"]) == 2
        assert "--presets names a setup twice" in capsys.readouterr().out

    def test_presets_on_identical_folds_with_paired_differences_against_the_first(self, ready, capsys):
        variant = ready.parent / "fast_dropout.toml"
        variant.write_text('extends = "demo_cpu"\n[train]\nbatch_size = 32\n[data]\naugment = false\n')
        presets = [str(ready.parent / "fast.toml"), str(variant)]
        argv = ["compare", str(ready / "cohort.toml"), "--presets", *presets, "--folds", "3", "--epochs", "1"]
        assert main([*argv, "--regions", str(ready / "lesions.csv")]) == 0
        table = pd.read_csv(ready / "work" / "compare.csv")
        assert table["preset"].tolist() == [*presets, "clinical only"]
        assert pd.isna(table.loc[0, "auc_diff"]) and table.loc[1:, "auc_diff"].notna().all()
        assert (table.loc[1:, "p_holm"] >= table.loc[1:, "p"]).all()
        assert table["apparent_auc"].between(0, 1).all()  # every setup's and the regression's overfitting
        first = Run(ready / "work" / "runs" / "fast-cv").read_cv_evaluation()
        assert table.loc[0, "optimism"] == pytest.approx(first.model.optimism)
        assert table.loc[2, "apparent_auc"] == pytest.approx(first.baseline.train_auc)
        runs = ready / "work" / "runs"
        a, b = (pd.read_csv(runs / name / "folds.csv") for name in ("fast-cv", "fast_dropout-cv"))
        pd.testing.assert_frame_equal(a, b)
        html = (ready / "work" / "compare.html").read_text()
        assert "Setups compared on identical folds" in html and "data:image/png;base64," in html
        assert "<th>apparent AUC</th><th>optimism</th>" in html
        assert "comparison (identical folds, out of fold)" in capsys.readouterr().out
        # where each setup's maps look, paired on the positive breasts' maps both scored
        checks = [
            pd.read_csv(runs / name / "explain" / "checks.csv") for name in ("fast-cv", "fast_dropout-cv")
        ]
        key = ["fold", "row", "side", "view"]
        both = pd.merge(*(c[(c["label"] == 1) & c["hit"].notna()] for c in checks), on=key)
        assert (table.loc[:1, "tumour_maps"] == len(both)).all() and pd.isna(table.loc[2, "tumour_maps"])
        assert table.loc[0, "tumour_peak"] == pytest.approx(both["hit_x"].mean())
        for view in ("CC", "MLO"):  # each view apart (a view whose maps are all blank has no share)
            of_view = both.loc[both["view"] == view, "hit_y"]
            assert table.loc[1, f"tumour_peak_{view.lower()}"] == pytest.approx(of_view.mean(), nan_ok=True)
        assert table.loc[1, "tumour_peak_diff"] == pytest.approx((both["hit_y"] - both["hit_x"]).mean())
        assert table.loc[1, "tumour_mass_diff_low"] <= table.loc[1, "tumour_mass_diff"]
        assert "Where the maps look" in html


class TestHolm:
    def test_hand_computed_adjustment(self):
        from mammofuse.evaluation.compare import holm

        # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (kept monotone)
        assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
        assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
