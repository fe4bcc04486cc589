import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file
from scipy.special import expit

from mammofuse.cli import main
from mammofuse.config import ClinicalConfig, ConfigError, load_config, save_config
from mammofuse.deploy.bundle import load_bundle, write_sums
from mammofuse.domain import Side, View
from mammofuse.evaluation.metrics import auc
from mammofuse.imaging import preprocess
from mammofuse.models import ModelError
from mammofuse.models.stacking import logit
from mammofuse.runs import Run
from tests.cohort.helpers import edit_config, edit_dicom
from tests.training.fixtures import train_variant


@pytest.fixture
def run(trained_master, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained_master, out)
    return out


def predict(bundle, cohort, out, *extra) -> pd.DataFrame:
    """Run `mammofuse predict` on COHORT/dicom and COHORT/clinical.csv; return the output table."""
    argv = [
        "predict",
        str(bundle),
        "--images",
        str(cohort / "dicom"),
        "--clinical",
        str(cohort / "clinical.csv"),
    ]
    assert main([*argv, "--out", str(out), *extra]) == 0
    text = {"patient_id": str, "reason": str, "unlike_training": str}
    return pd.read_csv(out, dtype=text).fillna({"reason": "", "unlike_training": ""})


class TestBundle:
    def test_evaluate_writes_a_bundle_with_everything_predict_needs(self, run):
        bundle = run / "bundle"
        names = (
            "model.safetensors",
            "config.toml",
            "encoder.json",
            "baseline.json",
            "bundle.json",
            "model_card.md",
            "SHA256SUMS",
        )
        for name in names:
            assert (bundle / name).is_file(), name
        info = json.loads((bundle / "bundle.json").read_text())
        assert {"torch", "torchvision", "pydicom", "mammofuse"} <= set(info["versions"])
        assert 0 < info["threshold"] < 1 and "auc" in info["test_auc"]
        weights = load_file(bundle / "model.safetensors")
        assert set(weights) == set(Run(run).read_net().state_dict())
        card = (bundle / "model_card.md").read_text()
        assert "EIC positive (label 1)" in card and "invasive_fraction < 75 %" in card
        baseline = json.loads((bundle / "baseline.json").read_text())  # the clinical-only model, as evaluated
        evaluated = json.loads((run / "metrics.json").read_text())["baseline"]["test"]["at_youden"]
        assert baseline["threshold"] == evaluated["threshold"]
        assert len(baseline["clinical"]) == len(Run(run).read_encoder().feature_names)
        listed = [line.split("  ")[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()]
        assert sorted(listed) == sorted(n for n in names if n != "SHA256SUMS")

    def test_another_operating_point_chooses_both_thresholds_on_validation_and_trains_nothing(
        self, run, capsys
    ):
        weights = (run / "checkpoints").stat().st_mtime_ns
        assert main(["evaluate", str(run), "--operating-point", "sensitivity:0.9"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert "NPV at the threshold chosen on validation (sensitivity ≥ 0.9)" in shown
        assert "validation positives (" in shown and "on so few, the sensitivity on other breasts" in shown
        assert (run / "checkpoints").stat().st_mtime_ns == weights
        result = Run(run).read_evaluation()
        scored = Run(run).read_predictions().query("split == 'val'")
        positive = scored[scored["label"] == 1]
        for column, model in (("probability", result.model), ("baseline_probability", result.baseline)):
            cut = model.threshold  # the highest cut that still finds 90 % of the validation positives
            higher = positive.loc[positive[column] > cut, column]
            assert (positive[column] >= cut).mean() >= 0.9 > (positive[column] >= higher.min()).mean()
        baseline = json.loads((run / "bundle" / "baseline.json").read_text())
        assert baseline["threshold"] == result.baseline.threshold  # what predict --labels calls it with
        info = json.loads((run / "bundle" / "bundle.json").read_text())
        assert info["operating_point"] == {"rule": "sensitivity", "target": 0.9}
        assert info["threshold"] == result.model.threshold
        assert "chosen on validation (sensitivity ≥ 0.9)" in (run / "bundle" / "model_card.md").read_text()
        assert load_bundle(run / "bundle").operating_point == result.operating_point
        assert main(["report", str(run)]) == 0
        html = " ".join((run / "report.html").read_text().split())
        assert "chosen on validation (sensitivity ≥ 0.9)" in html
        assert "the highest threshold whose sensitivity there reached 0.9" in html

    def test_an_operating_point_that_is_not_one_is_refused_by_the_command_line(self, run, capsys):
        with pytest.raises(SystemExit) as stop:
            main(["evaluate", str(run), "--operating-point", "sensitivity:90"])
        assert stop.value.code == 2
        assert "'sensitivity:90' is not an operating point: give youden" in capsys.readouterr().err

    def test_a_bundle_of_another_format_is_a_clear_error(self, run):
        meta = run / "bundle" / "bundle.json"
        info = json.loads(meta.read_text())
        info["format"] = 99
        meta.write_text(json.dumps(info))
        with pytest.raises(ModelError, match="bundle format 99"):
            load_bundle(run / "bundle")


def flip_bytes(path, at: int = 4000, n: int = 256) -> None:
    data = bytearray(path.read_bytes())
    data[at : at + n] = bytes(b ^ 0xFF for b in data[at : at + n])
    path.write_bytes(bytes(data))


def edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


class TestIntegrity:
    """A damaged or edited bundle is refused with the file named; it never scores."""

    @pytest.mark.parametrize(
        ("damage", "named"),
        [
            (lambda b: flip_bytes(b / "model.safetensors"), "model.safetensors: changed"),
            (
                lambda b: (b / "model.safetensors").write_bytes(
                    (b / "model.safetensors").read_bytes()[:5000]
                ),
                "model.safetensors: changed",
            ),
            (
                lambda b: edit_json(b / "encoder.json", lambda d: d["means"].update(age=99.0)),
                "encoder.json: changed",
            ),
            (
                lambda b: edit_json(b / "bundle.json", lambda d: d.update(threshold=0.0001)),
                "bundle.json: changed",
            ),
            (lambda b: (b / "model.safetensors").unlink(), "model.safetensors: missing"),
            (lambda b: (b / "extra.pt").write_bytes(b"pickle"), "extra.pt: not part of the bundle"),
        ],
        ids=[
            "flipped bytes",
            "truncated weights",
            "edited encoder",
            "edited threshold",
            "missing weights",
            "extra file",
        ],
    )
    def test_a_changed_bundle_is_refused_naming_the_file(self, run, capsys, damage, named):
        damage(run / "bundle")
        with pytest.raises(ModelError, match=named):
            load_bundle(run / "bundle")
        assert main(["bundle", "verify", str(run / "bundle")]) == 2
        out = capsys.readouterr().out
        assert named in out and "Traceback" not in out

    def test_a_consistent_bundle_with_an_unknown_key_is_refused_by_its_schema(self, run):
        edit_json(run / "bundle" / "encoder.json", lambda d: d.update(scale_mode="robust"))
        write_sums(run / "bundle")  # the checksums agree: only the schema can tell
        with pytest.raises(ModelError, match="encoder.json: unknown key.*scale_mode"):
            load_bundle(run / "bundle")

    def test_an_intact_bundle_verifies(self, run, capsys):
        assert main(["bundle", "verify", str(run / "bundle")]) == 0
        assert "intact (single model, 1 network," in capsys.readouterr().out


class TestPredict:
    def test_reproduces_evaluate_on_the_same_test_breasts(self, run, tmp_path, trained_master):
        pred = predict(run / "bundle", trained_master.parents[2], tmp_path / "pred" / "predictions.csv")
        pred["key"] = pred["patient_id"] + "/" + pred["side"]
        evaluated = pd.read_csv(run / "predictions.csv")
        merged = evaluated[evaluated["split"] == "test"].merge(pred, on="key")
        assert len(merged) == (evaluated["split"] == "test").sum()
        assert (merged["probability_x"] - merged["probability_y"]).abs().max() < 1e-5

    def test_a_breast_whose_pixels_cannot_be_decoded_gets_the_decoders_reason(
        self, run, tmp_path, trained_master, monkeypatch
    ):
        cohort = trained_master.parents[2]
        truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str}).sort_values(
            ["patient_id", "side"]
        )
        evaluated = pd.read_csv(run / "predictions.csv").set_index("key")
        held_out = (truth["patient_id"] + "/" + truth["side"]).isin(
            evaluated.index[evaluated["split"] == "test"]
        )
        breast = truth[held_out.shift(-1, fill_value=False).to_numpy()].iloc[
            0
        ]  # the row before a test breast
        broken, decode = cohort / breast["cc_path"], preprocess.preprocess_file

        def decoder(path, side, cfg):
            if Path(path) == broken:
                raise ValueError("JPEG 2000 stream ends early")
            return decode(path, side, cfg)

        monkeypatch.setattr(preprocess, "preprocess_file", decoder)
        pred = predict(run / "bundle", cohort, tmp_path / "p.csv", "--workers", "1")
        mine = pred[(pred["patient_id"] == breast["patient_id"]) & (pred["side"] == breast["side"])]
        reason = "pixels cannot be decoded (ValueError: JPEG 2000 stream ends early)"  # no file path
        assert mine["reason"].tolist() == [reason]
        scored = pred.set_index(pred["patient_id"] + "/" + pred["side"])[pred["reason"].to_numpy() == ""]
        assert len(scored) > 100 and scored["probability"].notna().all()  # the rest scored,
        test = scored.index.intersection(evaluated.index[evaluated["split"] == "test"])  # as evaluate did
        gap = scored.loc[test, "probability"] - evaluated.loc[test, "probability"]
        assert len(test) > 10 and gap.abs().max() < 1e-5

    def test_with_a_cache_a_second_run_decodes_nothing_and_scores_alike(
        self, run, tmp_path, trained_master, monkeypatch
    ):
        cohort, cache = trained_master.parents[2], tmp_path / "cache"
        first = predict(run / "bundle", cohort, tmp_path / "1.csv", "--cache", str(cache), "--workers", "1")
        assert (first["reason"] == "").sum() > 100 and any(cache.rglob("*.npy"))

        def no_decoding(*args, **kwargs):
            raise AssertionError("decoded again")

        monkeypatch.setattr("mammofuse.imaging.preprocess.preprocess_file", no_decoding)
        again = predict(run / "bundle", cohort, tmp_path / "2.csv", "--cache", str(cache))
        pd.testing.assert_frame_equal(first, again)
        elsewhere = predict(run / "bundle", cohort, tmp_path / "3.csv", "--workers", "1")  # no cache given
        assert elsewhere.loc[first["reason"] == "", "reason"].str.contains("decoded again").all()

    def test_bad_inputs_are_listed_with_reasons_and_the_rest_scored(
        self, run, tmp_path, trained_master, monkeypatch
    ):
        monkeypatch.setattr("mammofuse.explain.explain.DRAWN_AT_ONCE", 2)  # the overlays in several steps
        source = trained_master.parents[2]
        truth = pd.read_csv(source / "truth.csv", dtype={"patient_id": str}).head(6)  # six new breasts
        cohort = tmp_path / "new"
        for path in [*truth["cc_path"], *truth["mlo_path"]]:
            (cohort / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / path, cohort / path)
        clinical = pd.read_csv(source / "clinical.csv", dtype=str)
        clinical = clinical[clinical["patient_id"].isin(truth["patient_id"])].reset_index(drop=True)
        (cohort / truth.loc[0, "mlo_path"]).unlink()  # a missing view
        damaged = cohort / truth.loc[1, "cc_path"]
        damaged.write_bytes(damaged.read_bytes()[:2000])  # an unreadable file
        (cohort / "dicom" / "notes.txt").write_text("not an image")  # a file whose header names no breast
        clinical.loc[clinical["patient_id"] == truth.loc[2, "patient_id"], "grade"] = "4"  # unknown category
        side = clinical["side"].str[0].str.upper() == truth.loc[3, "side"]
        twice = clinical[(clinical["patient_id"] == truth.loc[3, "patient_id"]) & side]  # written twice,
        pd.concat([clinical, twice.assign(age="42")]).to_csv(cohort / "clinical.csv", index=False)  # unalike
        out = tmp_path / "out" / "predictions.csv"
        pred = predict(run / "bundle", cohort, out, "--explain", "--regions", str(source / "lesions.csv"))
        reasons = dict(zip(pred["patient_id"] + pred["side"], pred["reason"]))
        key = lambda i: truth.loc[i, "patient_id"] + truth.loc[i, "side"]  # noqa: E731
        assert len(pred) == len(truth)
        assert "no usable MLO image" in reasons[key(0)]
        assert reasons[key(1)].startswith("no usable CC image (")  # and why: its file, cut short
        assert f"{damaged}: pixel data is cut short" in reasons[key(1)]
        problems = pd.read_csv(out.with_name("predictions_problems.csv"), dtype=str).fillna("")
        assert (problems["path"] == str(damaged)).any()  # every file and row left out, written down:
        assert (problems["path"] == str(cohort / "dicom" / "notes.txt")).any()  # one of no breast too
        assert "'grade' value '4' is outside what the model knows" in reasons[key(2)]
        assert reasons[key(3)] == "more than one row in clinical.csv"
        scored = pred[pred["reason"] == ""]
        assert len(scored) >= 2 and scored["probability"].between(0, 1).all()
        assert set(scored["label"]) <= {0, 1}
        written = pd.read_csv(out, dtype=str, keep_default_na=False)  # as a spreadsheet shows it
        assert set(written.loc[written["reason"] == "", "label"]) <= {"0", "1"}  # not "1.0"
        assert (written.loc[written["reason"] != "", "label"] == "").all()
        assert sorted(p.name for p in (out.parent / "explain").glob("row*.png")) == sorted(
            f"row{r}.png" for r in scored["row"]
        )
        page = (out.parent / "explain" / "index.html").read_text()  # every overlay, most probable first
        listed = [int(row) for row in re.findall(r'<a href="row(\d+)\.png">', page)]
        assert listed == list(scored.sort_values(["probability", "row"], ascending=[False, True])["row"])
        top = scored.loc[scored["probability"].idxmax()]
        caption = f"row {top.row} ({top.side}): probability {top.probability:.3f}, called {int(top.label)}"
        assert caption in page
        assert not [p for p in pred["patient_id"] if p in page] and "outlined dashed" in page
        # the maps of the new breasts checked against their marked tumours, as explain checks a run's
        checks = pd.read_csv(out.parent / "explain" / "checks.csv")
        assert sorted(checks["row"]) == sorted([*scored["row"], *scored["row"]])
        assert checks["area_share"].notna().all() and "patient" not in checks
        summary = json.loads((out.parent / "explain" / "checks.json").read_text())
        assert [g["name"] for g in summary["localisation"]["groups"]] == ["marked"]  # no labels: no positives
        bare = [
            "predict",
            str(run / "bundle"),
            "--images",
            str(cohort / "dicom"),
            "--out",
            str(tmp_path / "p.csv"),
        ]
        assert (
            main(
                [*bare, "--clinical", str(cohort / "clinical.csv"), "--regions", str(source / "lesions.csv")]
            )
            == 2
        )

    def test_a_clinical_csv_that_lost_the_ids_leading_zeros_is_named_first(
        self, run, tmp_path, trained_master, capsys
    ):
        source = trained_master.parents[2]
        truth = pd.read_csv(source / "truth.csv", dtype={"patient_id": str}).head(3)
        cohort = tmp_path / "new"
        for path in [*truth["cc_path"], *truth["mlo_path"]]:
            (cohort / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / path, cohort / path)
            edit_dicom(cohort / path, lambda ds: setattr(ds, "PatientID", ds.PatientID.removeprefix("MF")))
        clinical = pd.read_csv(source / "clinical.csv", dtype=str)
        clinical = clinical[clinical["patient_id"].isin(truth["patient_id"])]
        clinical["patient_id"] = clinical["patient_id"].str.removeprefix("MF").astype(int)  # as Excel saves
        clinical.to_csv(cohort / "clinical.csv", index=False)
        capsys.readouterr()
        pred = predict(run / "bundle", cohort, tmp_path / "p.csv")
        out = capsys.readouterr().out
        assert (pred.loc[pred["patient_id"].str.startswith("0"), "reason"] != "").all()  # no clinical row
        first = out.index("  ! ")
        assert out[first:].startswith("  ! clinical.csv: ") and "leading zeros put back" in out
        assert "set clinical.patient_id_width = 5 in a cohort config for --cohort" in out


def held_out_keys(run) -> set[str]:
    evaluated = pd.read_csv(run / "predictions.csv")
    return set(evaluated.loc[evaluated["split"] == "test", "key"])


def labels_of(cohort, keys: set[str], out) -> None:
    """COHORT/labels.csv cut to the breasts in `keys` ('patient/side')."""
    labels = pd.read_csv(cohort / "labels.csv", dtype=str)
    labels[(labels["patient_id"] + "/" + labels["side"]).isin(keys)].to_csv(out, index=False)


class TestExternalValidation:
    def test_the_test_breasts_as_a_new_labelled_cohort_give_evaluates_figures(
        self, run, tmp_path, trained_master, capsys
    ):
        cohort, labels = trained_master.parents[2], tmp_path / "labels.csv"
        labels_of(cohort, held_out_keys(run), labels)
        with labels.open("a") as fh:
            fh.write("NOIMAGES,L,50\n")  # a labelled breast whose images are not in the export
        out = tmp_path / "site2" / "predictions.csv"
        pred = predict(run / "bundle", cohort, out, "--labels", str(labels))
        shown = " ".join(capsys.readouterr().out.split())
        lost = pred[pred["patient_id"] == "NOIMAGES"]
        assert lost["reason"].tolist() == ["no usable CC or MLO image"] and lost["truth"].tolist() == [1]
        assert "1 labelled breasts could not be scored" in shown
        result = json.loads((out.parent / "validation.json").read_text())
        evaluated = json.loads((run / "metrics.json").read_text())
        assert result["labelled"] == len(held_out_keys(run)) < result["scored"]
        for part in ("model", "baseline"):
            ours, theirs = result[part], evaluated[part]["test"]
            assert ours["auc"]["auc"] == pytest.approx(theirs["auc"]["auc"], abs=1e-9), part
            assert ours["at_youden"]["threshold"] == pytest.approx(theirs["at_youden"]["threshold"]), part
            assert ours["at_youden"]["confusion"] == theirs["at_youden"]["confusion"], part
        assert result["comparison"]["difference"] == pytest.approx(evaluated["comparison"]["difference"])
        assert result["internal"] == "test split"
        train = Run(run).read_data().query("split == 'train'")
        assert result["training_prevalence"] == pytest.approx(train["label"].mean())
        here, there = result["model"]["positives"] / result["model"]["n"], train["label"].mean()
        assert f"prevalence: {100 * here:.1f} % label 1 here, {100 * there:.1f} % in training" in shown
        assert result["internal_auc"] == evaluated["model"]["test"]["auc"]
        unlabelled = result["scored"] - result["labelled"]
        assert f"{unlabelled} scored breasts have no valid label in labels.csv" in shown
        assert "clinical only" in shown and "calibration of image + clinical: intercept" in shown
        truth = pd.read_csv(labels, dtype=str).query("patient_id != 'NOIMAGES'")
        pred["key"] = pred["patient_id"] + "/" + pred["side"]
        labelled = pred["truth"].notna() & (pred["reason"] == "")
        assert set(pred.loc[labelled, "key"]) == set(truth["patient_id"] + "/" + truth["side"])
        assert pred["clinical_probability"].notna().sum() == result["scored"]
        assert sorted(p.name for p in (out.parent / "figures").iterdir()) == [
            "calibration.png",
            "decision.png",
            "roc.png",
        ]
        page = (out.parent / "validation.html").read_text()
        assert page.count('src="data:image/png;base64,') == 3  # one page, its figures inside
        for part in ("model", "baseline"):
            low, high = result[part]["auc"]["low"], result[part]["auc"]["high"]
            assert f"{result[part]['auc']['auc']:.3f} [{low:.3f}, {high:.3f}]" in page
        density = [g for g in result["subgroups"] if g["variable"] == "density"]
        assert sum(int(g["breasts"]) for g in density) == result["labelled"]
        assert f"{density[0]['auc']}</td>" in page
        written = page + (out.parent / "validation.json").read_text()
        assert not any(pid in written for pid in pred["patient_id"])  # no patient identifier

    def test_a_bundle_written_before_bundles_kept_the_baseline_validates_the_model_alone_by_scanner(
        self, run, tmp_path, trained_master, capsys
    ):
        (run / "bundle" / "baseline.json").unlink()
        write_sums(run / "bundle")  # as such a bundle was written: intact, without the file
        cohort, labels, keys = tmp_path / "cohort", tmp_path / "labels.csv", held_out_keys(run)
        shutil.copytree(trained_master.parents[2], cohort, ignore=shutil.ignore_patterns("work"))
        truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})
        other = truth[(truth["patient_id"] + "/" + truth["side"]).isin(keys)].iloc[::2]
        for path in other["cc_path"]:  # half the breasts imaged on another scanner
            edit_dicom(cohort / path, lambda ds: setattr(ds, "Manufacturer", "Other Vendor"))
        labels_of(cohort, keys, labels)
        predict(run / "bundle", cohort, tmp_path / "predictions.csv", "--labels", str(labels))
        result = json.loads((tmp_path / "validation.json").read_text())
        assert "baseline" not in result and result["model"]["n"] == len(keys)
        assert "carries no clinical-only regression" in " ".join(capsys.readouterr().out.split())
        scanners = {
            g["group"]: int(g["breasts"]) for g in result["subgroups"] if g["variable"] == "manufacturer"
        }
        assert scanners == {"Other Vendor": len(other), "mammofuse synthetic": len(keys) - len(other)}

    def test_a_study_of_the_exam_before_surgery_takes_each_breasts_exam_by_its_label_date(
        self, run, tmp_path, trained_master
    ):
        bundle = run / "bundle"  # as a study that kept each breast's latest exam on or before its surgery
        cfg = load_config(bundle / "config.toml")
        images = cfg.images.model_copy(update={"exam_policy": "before_label_date"})
        labels_cfg = cfg.labels.model_copy(update={"date_column": "surgery_date"})
        save_config(cfg.model_copy(update={"images": images, "labels": labels_cfg}), bundle / "config.toml")
        write_sums(bundle)
        source, cohort = trained_master.parents[2], tmp_path / "new"
        truth = pd.read_csv(source / "truth.csv", dtype={"patient_id": str})
        truth = truth[(truth["patient_id"] + "/" + truth["side"]).isin(held_out_keys(run))]
        for view in ("cc", "mlo"):
            for path in truth[f"{view}_path"]:
                (cohort / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / path, cohort / path)
            prior = cohort / truth.iloc[0][f"{view}_path"]  # the first breast imaged a year before too
            shutil.copy(prior, prior.with_name("prior_" + prior.name))

            def earlier(ds, view=view):
                ds.StudyInstanceUID, ds.StudyDate = "1.2.3.4.2024", "20240101"
                ds.SOPInstanceUID = "1.2.3.4.2024." + ("1" if view == "cc" else "2")

            edit_dicom(prior.with_name("prior_" + prior.name), earlier)
        shutil.copy(source / "clinical.csv", cohort / "clinical.csv")
        labels = pd.read_csv(source / "labels.csv", dtype=str).merge(truth[["patient_id", "side"]])
        labels["surgery_date"] = "2025-06-30"  # after every breast's exam of 2025-01-01
        labels.loc[:1, "surgery_date"] = "2024-06-30"  # the first two: before it, after the prior exam
        labels.to_csv(cohort / "labels.csv", index=False)
        argv = ("--labels", str(cohort / "labels.csv"), "--explain")
        pred = predict(bundle, cohort, tmp_path / "out" / "p.csv", *argv)
        out = tmp_path / "out"  # with --labels and --explain, the validation and the overlays link each other
        assert '<a\nhref="explain/index.html">' in (out / "validation.html").read_text()
        assert '<a href="../validation.html">' in (out / "explain" / "index.html").read_text()
        pred = pred[pred["truth"].notna()]  # the labelled breasts (the clinical CSV lists every breast)
        reasons = dict(zip(pred["patient_id"] + pred["side"], pred["reason"]))
        first, second = (labels.loc[i, "patient_id"] + labels.loc[i, "side"] for i in (0, 1))
        assert reasons.pop(first) == ""  # scored: its exam of 2024, the one before its surgery
        why = reasons.pop(second)  # its only exam came after its surgery, which its reason says
        assert why.startswith("no usable CC or MLO image (") and "has no dated exam on or before" in why
        assert set(reasons.values()) == {""} and len(reasons) == len(truth) - 2  # one exam, before surgery

    def test_two_bundles_on_the_same_new_breasts_compared_paired(
        self, run, ready, tmp_path, trained_master, capsys
    ):
        other = train_variant(ready, "other", "[train]\nepochs = 1\nseed = 7\n")  # another model
        assert main(["evaluate", str(other)]) == 0
        cohort, labels = trained_master.parents[2], tmp_path / "labels.csv"
        labels_of(cohort, held_out_keys(run), labels)
        out = tmp_path / "site2" / "predictions.csv"
        mine = predict(
            run / "bundle", cohort, out, "--labels", str(labels), "--versus", str(other / "bundle")
        )
        theirs = pd.read_csv(out.parent / "versus_predictions.csv", dtype={"patient_id": str})
        both = mine.merge(theirs, on=["patient_id", "side"]).dropna(subset=["truth_x", "probability_y"])
        result = json.loads((out.parent / "validation.json").read_text())["versus"]
        y = both["truth_x"].astype(int).to_numpy()
        assert result["n"] == len(both) == len(held_out_keys(run))
        assert result["auc"]["auc"] == pytest.approx(auc(y, both["probability_x"].to_numpy()))
        assert result["other_auc"]["auc"] == pytest.approx(auc(y, both["probability_y"].to_numpy()))
        difference = result["auc"]["auc"] - result["other_auc"]["auc"]
        assert result["comparison"]["difference"] == pytest.approx(difference) and difference != 0
        assert f"versus {other / 'bundle'} (single model)" in " ".join(capsys.readouterr().out.split())
        assert "Against another bundle:" in (out.parent / "validation.html").read_text()

    def test_versus_without_labels_or_a_second_bundle_is_refused_before_any_work(
        self, run, trained_master, tmp_path, capsys
    ):
        cohort = trained_master.parents[2]
        argv = [
            "predict",
            str(run / "bundle"),
            "--images",
            str(cohort / "dicom"),
            "--versus",
            str(run / "bundle"),
        ]
        assert main([*argv, "--out", str(tmp_path / "p.csv")]) == 2
        assert "--versus compares two bundles on labelled breasts" in capsys.readouterr().out
        assert not (tmp_path / "p.csv").exists()
        argv[-1] = str(tmp_path / "no_bundle")  # a second bundle not there: before, after the first scored
        argv += ["--clinical", str(cohort / "clinical.csv"), "--labels", str(cohort / "labels.csv")]
        assert main([*argv, "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "p.csv")]) == 2
        assert "no_bundle: not a model bundle" in capsys.readouterr().out
        assert not any((tmp_path / "cache").rglob("*.npy"))  # not an image preprocessed

    def test_labels_of_one_class_give_the_share_called_right_beside_the_baseline(
        self, run, tmp_path, trained_master, capsys
    ):
        """A site's labelled breasts all EIC negative: no AUC, but the share the bundle's threshold calls
        negative (specificity) with its interval, for the model, the baseline and a --versus bundle."""
        cohort, labels = trained_master.parents[2], tmp_path / "labels.csv"
        table = pd.read_csv(cohort / "labels.csv", dtype=str)
        table.assign(invasive_fraction="90").to_csv(labels, index=False)  # every breast EIC negative
        out = tmp_path / "out" / "p.csv"
        versus = ("--versus", str(run / "bundle"))  # the same bundle: the same share, on the same breasts
        pred = predict(run / "bundle", cohort, out, "--labels", str(labels), *versus)
        shown = " ".join(capsys.readouterr().out.split())
        assert "are all EIC negative (label 0): no AUC, calibration, PPV or NPV" in shown
        result = json.loads((out.parent / "validation.json").read_text())
        scored = pred[pred["reason"] == ""]
        threshold = result["model"]["threshold"]
        called_negative = int((scored["probability"] < threshold).sum())
        assert result["label"] == 0 and result["labelled"] == len(scored) > 0
        assert (result["model"]["name"], result["model"]["hits"]) == ("specificity", called_negative)
        assert result["model"]["low"] <= called_negative / len(scored) <= result["model"]["high"]
        assert result["model"]["high"] - result["model"]["low"] > 0.05  # an interval, not a point
        assert result["versus"] == result["model"] and result["versus_bundle"] == str(run / "bundle")
        baseline = result["baseline"]
        assert baseline["hits"] == int((scored["clinical_probability"] < baseline["threshold"]).sum())
        assert f"specificity {called_negative / len(scored):.2f} [" in shown
        page = (out.parent / "validation.html").read_text()
        assert "every one EIC negative" in page and f"({called_negative} of {len(scored)})" in page
        assert (out.parent / "figures" / "scores.png").is_file() and 'alt="probabilities"' in page

    def test_labels_keyed_to_no_breast_stop_after_the_scores_and_overlays(
        self, run, tmp_path, trained_master, capsys
    ):
        cohort, labels = trained_master.parents[2], tmp_path / "labels.csv"
        table = pd.read_csv(cohort / "labels.csv", dtype=str)
        table.assign(patient_id="X" + table["patient_id"]).to_csv(labels, index=False)  # other IDs
        out, images = tmp_path / "out" / "p.csv", tmp_path / "images"
        for study in sorted((cohort / "dicom").iterdir())[:4]:  # a few breasts: an overlay each
            shutil.copytree(study, images / study.name)
        argv = ["predict", str(run / "bundle"), "--images", str(images), "--labels", str(labels)]
        argv += ["--clinical", str(cohort / "clinical.csv"), "--out", str(out), "--explain"]
        assert main(argv) == 2
        shown = " ".join(capsys.readouterr().out.split())
        assert "labels.csv: none of the " in shown and "scored breasts has a valid label" in shown
        scored = pd.read_csv(out).dropna(subset=["probability"])
        assert len(scored) and len(list((out.parent / "explain").glob("row*.png"))) == len(scored)
        assert "validation.html" not in (out.parent / "explain" / "index.html").read_text()
        assert not (out.parent / "validation.json").exists()


class TestAnotherSite:
    """Another hospital's export (synth --site b: its scanner, column names, codes, separators, label scale)
    read with its own cohort config; the model's features and endpoint stay the bundle's."""

    def test_its_export_read_with_its_cohort_config_gives_the_same_breasts_and_clinical_scores(
        self, run, tmp_path, trained_master, capsys
    ):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        cohort, site = trained_master.parents[2], tmp_path / "site_b"
        synthesize(site, SynthOptions(breasts=240, seed=11, image_size=(64, 52), workers=1, site="b"))
        here = predict(
            run / "bundle", cohort, tmp_path / "a" / "p.csv", "--labels", str(cohort / "labels.csv")
        )
        out = tmp_path / "b" / "predictions.csv"
        argv = ["predict", str(run / "bundle"), "--cohort", str(site / "cohort.toml"), "--labels"]
        assert main([*argv, "--out", str(out)]) == 0
        there = pd.read_csv(out, dtype={"patient_id": str, "reason": str}).fillna({"reason": ""})
        key = ["patient_id", "side"]
        assert there[key].equals(here[key]) and there["truth"].equals(here["truth"])
        assert there["reason"].equals(here["reason"])  # the same breasts unscored, for the same reasons
        scored = there["reason"] == ""
        assert scored.sum() > 200
        assert there.loc[scored, "clinical_probability"].to_numpy() == pytest.approx(
            here.loc[scored, "clinical_probability"].to_numpy()
        )  # the same clinical values, read through its rename and recode
        moved = there.loc[scored, "probability"].to_numpy() != here.loc[scored, "probability"].to_numpy()
        assert moved.mean() > 0.9  # its scanner's images
        assert set(there["manufacturer"]) == {"mammofuse synthetic B"}
        assert there.loc[scored, "unlike_training"].str.contains("manufacturer").all()
        result = json.loads((out.parent / "validation.json").read_text())
        assert result["labels"] == "labels.csv" and result["labelled"] == scored.sum()
        density = {g["group"] for g in result["subgroups"] if g["variable"] == "density"}
        assert density <= set("abcd") and len(density) >= 3  # its codes A-D read as the model's a-d

    def test_a_site_that_keeps_a_feature_in_another_unit_is_read_in_the_models(self, tmp_path):
        """The unit a feature is in is the model's: a site's cohort.toml that says its tumour sizes are in
        cm (its own `units`) has them read as the model's mm, as `written_in` would."""
        from mammofuse.cohort.tables import read_clinical
        from mammofuse.deploy.predict import in_models_units
        from mammofuse.problems import Problems

        sizes = ["2,3", "1.5 cm", "4.5", "31"]  # 31 cm: outside the site's range, in its unit
        pd.DataFrame({"id": ["P1", "P2", "P3", "P4"], "side": "L", "size": sizes}).to_csv(
            tmp_path / "site.csv", index=False
        )
        site = ClinicalConfig(
            path=tmp_path / "site.csv",
            patient_column="id",
            numeric=["size"],
            categorical=[],
            units={"size": "cm"},
            ranges={"size": (0, 30)},
        )
        model = {"size": "mm", "age": "years"}  # a feature the site has no unit for: the model's
        read = in_models_units(site, model, tmp_path / "cohort.toml")
        assert (read.units, read.written_in) == ({"size": "mm", "age": "years"}, {"size": "cm"})
        assert read.ranges == {"size": (0, 300)}
        clinical = read_clinical(read, problems := Problems())
        assert clinical is not None
        assert [clinical.values[(f"P{i}", Side.LEFT)]["size"] for i in range(1, 5)] == [23, 15, 45, None]
        assert "'31' lies outside 0 to 300 (clinical.ranges)" in problems.items[0].reason
        assert in_models_units(site, {}, tmp_path) == site  # a bundle that names no units: as the site says
        with pytest.raises(ConfigError, match=r"clinical size in 'cm' .* the model's size is in 'years'"):
            in_models_units(site, {"size": "years"}, tmp_path / "cohort.toml")

    @pytest.mark.parametrize(
        "threshold, extra, said",
        [
            (75, ["--images", "dicom"], "--cohort says where the images and the clinical CSV are"),
            (60, ["--labels"], "labels.threshold = 60 %, but the model's endpoint is EIC positive (label 1)"),
        ],
    )
    def test_what_cannot_be_read_so_is_refused_before_any_work(
        self, run, tmp_path, capsys, threshold, extra, said
    ):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        site = tmp_path / "site_b"
        synthesize(site, SynthOptions(breasts=4, seed=1, image_size=(64, 52), workers=1, site="b"))
        edit_config(site, labels={"threshold": threshold})
        argv = ["predict", str(run / "bundle"), "--cohort", str(site / "cohort.toml"), *extra]
        assert main([*argv, "--out", str(tmp_path / "p.csv")]) == 2
        assert said in " ".join(capsys.readouterr().out.split())
        assert not (tmp_path / "p.csv").exists()

    def test_labels_without_a_csv_need_a_cohort(self, run, trained_master, tmp_path, capsys):
        cohort = trained_master.parents[2]
        argv = ["predict", str(run / "bundle"), "--images", str(cohort / "dicom"), "--labels"]
        assert main([*argv, "--out", str(tmp_path / "p.csv")]) == 2
        assert "--labels without a CSV takes the label CSV of --cohort" in capsys.readouterr().out


def labelled_breasts(cohort) -> list[str]:
    """predict's or recalibrate's arguments for COHORT's images, clinical and label CSVs."""
    return [
        *("--images", str(cohort / "dicom"), "--clinical", str(cohort / "clinical.csv")),
        *("--labels", str(cohort / "labels.csv")),
    ]


class TestRecalibrate:
    def test_a_recalibrated_bundle_scores_through_its_map_beside_the_models_own_probability(
        self, run, tmp_path, trained_master, capsys
    ):
        cohort, recalibrated = trained_master.parents[2], tmp_path / "site" / "bundle"
        where = labelled_breasts(cohort)
        assert main(["recalibrate", str(run / "bundle"), *where, "--out", str(recalibrated)]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        fitted = json.loads((recalibrated / "recalibration.json").read_text())
        assert fitted["method"] == "logistic" and fitted["check"]["folds"] == 5
        assert fitted["site"] == str(cohort / "labels.csv") and fitted["breasts"] > 200
        shipped, crossed = fitted["check"]["shipped"], fitted["check"]["recalibrated"]
        assert shipped["n"] == crossed["n"] == fitted["breasts"]
        assert f"intercept {crossed['calibration']['intercept']:+.2f}" in shown and "as shipped" in shown
        # the clinical-only model checked alike, on the same breasts and folds: what the images add there
        plain = fitted["check"]["clinical_recalibrated"]
        assert fitted["check"]["clinical_shipped"]["n"] == plain["n"] == fitted["breasts"]
        assert (
            f"calibration clinical only, recalibrated: intercept {plain['calibration']['intercept']:+.2f}"
            in (shown)
        )
        text = {"patient_id": str, "reason": str, "unlike_training": str}
        breasts = pd.read_csv(tmp_path / "site" / "bundle-breasts.csv", dtype=text).fillna({"reason": ""})
        assert ((breasts["reason"] == "") & breasts["truth"].notna()).sum() == fitted["breasts"]
        assert f"{fitted['breasts']} of {len(breasts)} breasts scored and labelled: the fit's" in shown
        unscored = breasts[breasts["reason"] != ""].iloc[
            0
        ]  # what was not used, and why, shown as predict does
        assert (
            f"row {unscored['row']} ({unscored['patient_id']} {unscored['side']}): {unscored['reason']}"
            in shown
        )
        assert main(["bundle", "verify", str(recalibrated)]) == 0
        verified = " ".join(capsys.readouterr().out.split())
        assert f"recalibrated (logistic) to {cohort / 'labels.csv'}" in verified
        assert "its clinical-only model refitted alike" in verified
        before = predict(
            run / "bundle", cohort, tmp_path / "before.csv", "--labels", str(cohort / "labels.csv")
        )
        after = predict(recalibrated, cohort, tmp_path / "after.csv", "--labels", str(cohort / "labels.csv"))
        said = " ".join(capsys.readouterr().out.split())
        assert "this bundle is recalibrated to" in said and "is not recalibrated" not in said
        card = (recalibrated / "model_card.md").read_text()
        assert f"Brier {shipped['brier']:.3f} -> {crossed['brier']:.3f}" in card
        assert "The clinical-only model beside it is refitted to the same breasts alike" in " ".join(
            card.split()
        )
        scored = (after["reason"] == "").to_numpy()
        assert after.loc[scored, "model_probability"].to_numpy() == pytest.approx(
            before.loc[scored, "probability"].to_numpy()
        )
        mapped = expit(fitted["intercept"] + fitted["slope"] * logit(before.loc[scored, "probability"]))
        assert after.loc[scored, "probability"].to_numpy() == pytest.approx(mapped)
        # the clinical-only model beside it is refitted alike: on the breasts of the fit, both calibrated
        clinical = fitted["clinical"]
        mapped = expit(
            clinical["intercept"] + clinical["slope"] * logit(before.loc[scored, "clinical_probability"])
        )
        assert after.loc[scored, "clinical_probability"].to_numpy() == pytest.approx(mapped)
        validation = json.loads((tmp_path / "validation.json").read_text())
        for model in ("model", "baseline"):
            assert validation[model]["calibration"]["intercept"] == pytest.approx(0, abs=1e-3)
            assert validation[model]["calibration"]["slope"] == pytest.approx(1, abs=1e-3)
        threshold = load_bundle(recalibrated).threshold
        assert (after.loc[scored, "label"] == (after.loc[scored, "probability"] >= threshold)).all()
        again = ["recalibrate", str(recalibrated), *where, "--out", str(tmp_path / "again")]
        assert main(again) == 2 and "recalibrated already" in capsys.readouterr().out
        assert not (tmp_path / "again").exists()
        del fitted["clinical"]  # as a bundle recalibrated before the clinical-only model was refitted too
        (recalibrated / "recalibration.json").write_text(json.dumps(fitted))
        write_sums(recalibrated)
        old = predict(recalibrated, cohort, tmp_path / "old.csv", "--labels", str(cohort / "labels.csv"))
        assert old["clinical_probability"].equals(before["clinical_probability"])
        assert "the clinical-only model beside it is not recalibrated" in " ".join(
            capsys.readouterr().out.split()
        )

    def test_a_sites_own_operating_point_is_chosen_on_its_breasts_and_checked_by_cross_fitting(
        self, run, tmp_path, trained_master, capsys
    ):
        cohort, recalibrated = trained_master.parents[2], tmp_path / "site" / "bundle"
        argv = ["recalibrate", str(run / "bundle"), *labelled_breasts(cohort), "--out", str(recalibrated)]
        assert main([*argv, "--operating-point", "sensitivity:0.85"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        fitted = json.loads((recalibrated / "recalibration.json").read_text())
        assert fitted["operating_point"] == {"rule": "sensitivity", "target": 0.85}
        after = predict(recalibrated, cohort, tmp_path / "after.csv", "--labels", str(cohort / "labels.csv"))
        scored = after[(after["reason"] == "") & after["truth"].notna()]
        positive = scored.loc[scored["truth"] == 1, "probability"]
        cut = fitted["threshold"]  # on all the site's breasts: the highest that finds 85 % of its positives
        assert (positive >= cut).mean() >= 0.85 > (positive >= positive[positive > cut].min()).mean()
        bundle = load_bundle(recalibrated)
        assert bundle.threshold == cut != load_bundle(run / "bundle").threshold
        assert (after["label"].dropna() == (after["probability"].dropna() >= cut)).all()
        validation = json.loads((tmp_path / "validation.json").read_text())
        assert validation["operating_point"] == fitted["operating_point"]
        said = " ".join(capsys.readouterr().out.split())
        assert f"the model's chosen on the breasts it was recalibrated on ({cohort / 'labels.csv'};" in said
        assert validation["model"]["at_youden"]["threshold"] == cut
        assert validation["baseline"]["at_youden"]["threshold"] == fitted["clinical"]["threshold"] != cut
        assert "the clinical-only model's too, by the same rule" in said
        crossed = fitted["check"]["recalibrated"]["at_youden"]  # each fold at the cut its fit chose
        assert crossed["threshold"] != pytest.approx(cut, abs=1e-6)
        assert f"the new bundle's, chosen on all: {cut:.3f}" in shown and "for sensitivity ≥ 0.85" in shown
        card = " ".join((recalibrated / "model_card.md").read_text().split())
        assert f"the threshold is the site's, {cut:.3f}, chosen on these breasts' recalibrated" in card
        assert f"sensitivity {crossed['sensitivity']:.2f}, specificity {crossed['specificity']:.2f}" in card

    def test_an_out_folder_that_is_not_a_recalibrated_bundle_is_never_replaced(
        self, run, tmp_path, trained_master, capsys
    ):
        cohort, kept = trained_master.parents[2], tmp_path / "site"
        kept.mkdir()
        (kept / "notes.txt").write_text("a reader's notes")
        where = labelled_breasts(cohort)
        for out, said in (
            (kept, "exists and is not a recalibrated bundle"),
            (run / "bundle", "the bundle itself"),
        ):
            assert main(["recalibrate", str(run / "bundle"), *where, "--out", str(out)]) == 2
            assert said in capsys.readouterr().out
        assert (kept / "notes.txt").is_file() and main(["bundle", "verify", str(run / "bundle")]) == 0


class TestUnlikeTraining:
    def test_images_of_another_size_are_flagged_and_left_unscored_with_strict(self, run, tmp_path, capsys):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        info = json.loads((run / "bundle" / "bundle.json").read_text())
        assert info["profile"]["rows"] == [64, 64] and info["profile"]["breasts"] > 100
        other = tmp_path / "other"  # the same generator at twice the resolution: another kind of input
        synthesize(other, SynthOptions(breasts=4, seed=5, image_size=(128, 104), workers=1, na_fraction=0.0))
        pred = predict(run / "bundle", other, tmp_path / "p.csv")
        assert (pred["unlike_training"] != "").all() and pred["probability"].notna().all()
        assert "image height 128 px (training 64-64)" in pred.loc[0, "unlike_training"]
        assert "pixel spacing 1.875 mm (training 3.75-3.75)" in pred.loc[0, "unlike_training"]
        assert "4 of 4 breasts are unlike the data the model was trained on" in capsys.readouterr().out
        strict = predict(run / "bundle", other, tmp_path / "s.csv", "--strict")
        assert (
            strict["probability"].isna().all() and strict["reason"].str.contains("unlike the training").all()
        )

    def test_another_manufacturer_is_flagged(self, run, tmp_path, trained_master):
        cohort = tmp_path / "cohort"
        shutil.copytree(trained_master.parents[2], cohort, ignore=shutil.ignore_patterns("work"))
        path = next((cohort / "dicom").rglob("*.dcm"))
        edit_dicom(path, lambda ds: setattr(ds, "Manufacturer", "Other Vendor"))
        pred = predict(run / "bundle", cohort, tmp_path / "p.csv")
        flagged = pred[pred["unlike_training"].str.contains("manufacturer 'Other Vendor'")]
        assert len(flagged) == 1 and "(training: mammofuse synthetic)" in flagged.iloc[0]["unlike_training"]

    def test_a_clinical_value_far_outside_the_training_values_is_flagged(self, run, tmp_path, trained_master):
        """Age 105, within the cohort's range (18-110) but far beyond the training breasts', was scored
        without a word: the model extrapolates there. Age 560 lies outside the range: a typo, unscored, saying
        so."""
        cohort = tmp_path / "cohort"
        shutil.copytree(trained_master.parents[2], cohort, ignore=shutil.ignore_patterns("work"))
        clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
        first, second = clinical.index[clinical.notna().all(axis=1)][:2]
        clinical.loc[first, "age"], clinical.loc[second, "age"] = "105", "560"
        clinical.to_csv(cohort / "clinical.csv", index=False)
        breast = {
            i: (clinical.loc[i, "patient_id"], clinical.loc[i, "side"][0].upper()) for i in (first, second)
        }
        pred = predict(run / "bundle", cohort, tmp_path / "p.csv").set_index(["patient_id", "side"])
        flagged = pred[pred["unlike_training"] != ""]
        assert flagged.index.tolist() == [breast[first]]
        assert re.fullmatch(r"clinical 'age' 105 \(training \d+-\d+\)", flagged.iloc[0]["unlike_training"])
        typo = f"clinical.csv line {second + 2}, column 'age': '560' lies outside 18 to 110 (clinical.ranges)"
        assert pred.loc[breast[second], "reason"] == (
            f"clinical 'age' is missing ({typo}) (the model was trained with na_policy = 'drop')"
        )
        strict = predict(run / "bundle", cohort, tmp_path / "s.csv", "--strict")
        assert strict["probability"].isna().sum() == pred["probability"].isna().sum() + 1

    def test_a_clinical_column_in_another_unit_is_warned_though_each_value_lies_in_the_training_range(
        self, run, tmp_path, trained_master, capsys
    ):
        """Tumour sizes in cm read as mm (a site's export, no unit written) lie inside the training range:
        no breast was flagged, and the model scored them as tumours ten times smaller."""
        cohort = tmp_path / "cohort"
        shutil.copytree(trained_master.parents[2], cohort, ignore=shutil.ignore_patterns("work"))
        predict(run / "bundle", cohort, tmp_path / "mm.csv")
        assert "another unit" not in capsys.readouterr().out
        clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
        clinical["tumour_size_mm"] = pd.to_numeric(clinical["tumour_size_mm"]) / 10
        clinical.to_csv(cohort / "clinical.csv", index=False)
        pred = predict(run / "bundle", cohort, tmp_path / "cm.csv")
        out = " ".join(capsys.readouterr().out.split())
        said = re.search(
            r"clinical 'tumour_size_mm': these breasts' median is ([\d.]+), 0.\d+ x the training "
            r"breasts' ([\d.]+) mm: written in another unit\?",
            out,
        )
        assert said and float(said[1]) < float(said[2]) / 9
        assert not pred["unlike_training"].str.contains("tumour_size_mm").any()  # no value alone shows it

    def test_one_value_typed_in_another_unit_is_flagged_against_the_training_values(
        self, run, tmp_path, trained_master, capsys
    ):
        """A 2 cm tumour typed "2" in a column of millimetres with decimals, a Ki-67 of 25 % typed "0.25":
        each lies inside the training range, and a few new breasts have no column of their own to show it.
        Judged against the training values, each is named with what it would be in the other unit."""
        cohort = tmp_path / "cohort"
        shutil.copytree(trained_master.parents[2], cohort, ignore=shutil.ignore_patterns("work"))
        clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
        first, second = clinical.index[clinical.notna().all(axis=1)][:2]
        clinical.loc[first, "tumour_size_mm"], clinical.loc[second, "ki67"] = "2", "0.25"
        clinical.loc[[first, second]].to_csv(cohort / "clinical.csv", index=False)  # two new breasts
        pred = predict(run / "bundle", cohort, tmp_path / "p.csv").set_index(["patient_id", "side"])
        out = " ".join(capsys.readouterr().out.split())
        scored = pred[pred["reason"] == ""]
        key = {
            i: (clinical.loc[i, "patient_id"], clinical.loc[i, "side"][0].upper()) for i in (first, second)
        }
        assert set(scored.index) == set(key.values())
        quartiles = r"\(training quartiles [\d.]+-[\d.]+ (mm|percent)\)"
        assert re.fullmatch(
            rf"clinical 'tumour_size_mm' 2 mm {quartiles}: written in cm \(20 mm\)\?",
            pred.loc[key[first], "unlike_training"],
        )
        assert re.fullmatch(
            rf"clinical 'ki67' 0.25 percent {quartiles}: written in fraction \(25 percent\)\?",
            pred.loc[key[second], "unlike_training"],
        )
        assert f"2 of {len(pred)} breasts are unlike the data the model was trained on" in out
        assert f"row {pred.loc[key[first], 'row']} ({key[first][0]} {key[first][1]}): clinical" in out
        assert predict(run / "bundle", cohort, tmp_path / "s.csv", "--strict")["probability"].isna().all()
        clinical.loc[first, "tumour_size_mm"], clinical.loc[second, "ki67"] = "2 cm", "25"  # as meant
        clinical.loc[[first, second]].to_csv(cohort / "clinical.csv", index=False)
        meant = predict(run / "bundle", cohort, tmp_path / "m.csv", "--strict")
        assert meant["probability"].notna().sum() == 2 and (meant["unlike_training"] == "").all()

    def test_a_batch_scored_unlike_held_out_breasts_is_warned(self):
        import numpy as np

        from mammofuse.deploy.profile import Profile, score_shift

        profile = Profile(
            rows=(64, 64),
            columns=(52, 52),
            brightness=(0.2, 0.4),
            breasts=100,
            scores=[0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7],
        )
        assert score_shift(profile, np.linspace(0.12, 0.55, 50)) == ""
        warning = score_shift(profile, np.full(50, 0.99))
        assert (
            "100% of these breasts score outside the middle 90 %" in warning and "median here 0.99" in warning
        )

    def test_breasts_like_the_training_data_are_not_flagged(self, run, tmp_path, trained_master):
        pred = predict(run / "bundle", trained_master.parents[2], tmp_path / "p.csv")
        scored = pred[pred["reason"] == ""]
        assert (scored["unlike_training"] == "").mean() > 0.95


class TestModelVariants:
    def test_the_validation_fitted_regression_travels_with_the_bundle(self, ready, tmp_path):
        """model.fusion = 'late': evaluate fits the regression on validation, the bundle carries it, and
        predict gives what evaluate gave on the same test breasts."""
        run = train_variant(ready, "late", '[model]\nfusion = "late"\n')
        assert main(["evaluate", str(run)]) == 0
        stacker = json.loads((run / "stacker.json").read_text())
        assert set(stacker) == {"intercept", "image", "clinical"} and len(stacker["clinical"]) > 5
        assert json.loads((run / "bundle" / "stacker.json").read_text()) == stacker
        assert_predict_gives_what_evaluate_gave(run, ready, tmp_path)

    def test_a_patch_model_trains_explains_with_its_attention_and_predicts_as_evaluated(
        self, ready, tmp_path
    ):
        """model.kind = 'patches' end to end: train, evaluate, explain (Grad-CAM and the tile attention
        in the case figures), the bundle, and predict giving what evaluate gave."""
        run = train_variant(ready, "patches", '[model]\nkind = "patches"\ntile = 32\ntile_batch = 16\n')
        assert main(["evaluate", str(run)]) == 0
        assert main(["explain", str(run), "--n", "1", "--regions", str(ready / "lesions.csv")]) == 0
        index = pd.read_csv(run / "explain" / "index.csv")
        assert len(index) >= 2 and all((run / "explain" / f).is_file() for f in index["file"])
        net = Run(run).read_net()
        assert net.kind == "patches" and net.attention(View.CC) is not None
        # the attention is checked against the marked tumours too: by the tiles the tumour touches
        checks = pd.read_csv(run / "explain" / "checks.csv")
        assert checks["attention_hit"].isin([0, 1]).all() and checks["attention_share"].between(0, 1).all()
        assert (checks["tile_share"] >= checks["area_share"]).all()  # whole tiles cover at least the region
        assert main(["report", str(run)]) == 0
        report = (run / "report.html").read_text()
        assert "tile attention" in report and "tile attention on the EIC positive held-out breasts" in report
        assert_predict_gives_what_evaluate_gave(run, ready, tmp_path)


def assert_predict_gives_what_evaluate_gave(run, cohort, tmp_path) -> None:
    """The run's bundle scores the cohort's test breasts as `evaluate` did."""
    pred = predict(run / "bundle", cohort, tmp_path / "p.csv")
    pred["key"] = pred["patient_id"] + "/" + pred["side"]
    evaluated = pd.read_csv(run / "predictions.csv")
    merged = evaluated[evaluated["split"] == "test"].merge(pred, on="key")
    assert len(merged) == (evaluated["split"] == "test").sum()
    assert (merged["probability_x"] - merged["probability_y"]).abs().max() < 1e-5
