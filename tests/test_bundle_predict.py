import json
import shutil

import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.deploy.bundle import load_bundle
from mammofuse.models import ModelError
from mammofuse.runs import Run


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
    return pd.read_csv(out, dtype={"patient_id": str}).fillna({"reason": ""})


class TestBundle:
    def test_evaluate_writes_a_bundle_with_everything_predict_needs(self, run):
        bundle = run / "bundle"
        for name in ("model.pt", "config.toml", "encoder.json", "bundle.json", "model_card.md"):
            assert (bundle / name).is_file(), name
        info = json.loads((bundle / "bundle.json").read_text())
        assert {"torch", "torchvision", "pydicom", "mammofuse"} <= set(info["versions"])
        assert 0 < info["threshold"] < 1 and "auc" in info["test_auc"]
        state = torch.load(bundle / "model.pt", weights_only=True)
        assert set(state) == set(Run(run).read_net().state_dict())
        card = (bundle / "model_card.md").read_text()
        assert "EIC positive (label 1)" in card and "invasive_fraction < 75 %" in card

    def test_a_bundle_of_another_format_is_a_clear_error(self, run):
        meta = run / "bundle" / "bundle.json"
        info = json.loads(meta.read_text())
        info["format"] = 99
        meta.write_text(json.dumps(info))
        with pytest.raises(ModelError, match="bundle format 99"):
            load_bundle(run / "bundle")


class TestPredict:
    def test_reproduces_evaluate_on_the_same_test_breasts(self, run, tmp_path, trained_master):
        pred = predict(run / "bundle", trained_master.parents[2], tmp_path / "pred" / "predictions.csv")
        pred["key"] = pred["patient_id"] + "/" + pred["side"]
        evaluated = pd.read_csv(run / "predictions.csv")
        merged = evaluated[evaluated["split"] == "test"].merge(pred, on="key")
        assert len(merged) == (evaluated["split"] == "test").sum()
        assert (merged["probability_x"] - merged["probability_y"]).abs().max() < 1e-5

    def test_bad_inputs_are_listed_with_reasons_and_the_rest_scored(self, run, tmp_path, trained_master):
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
        clinical.loc[clinical["patient_id"] == truth.loc[2, "patient_id"], "grade"] = "4"  # unknown category
        clinical.to_csv(cohort / "clinical.csv", index=False)
        out = tmp_path / "out" / "predictions.csv"
        pred = predict(run / "bundle", cohort, out, "--explain")
        reasons = dict(zip(pred["patient_id"] + pred["side"], pred["reason"]))
        key = lambda i: truth.loc[i, "patient_id"] + truth.loc[i, "side"]  # noqa: E731
        assert len(pred) == len(truth)
        assert "no usable MLO image" in reasons[key(0)]
        assert "no usable CC image" in reasons[key(1)]
        assert "'grade' value '4' is outside what the model knows" in reasons[key(2)]
        scored = pred[pred["reason"] == ""]
        assert len(scored) >= 2 and scored["probability"].between(0, 1).all()
        assert set(scored["label"]) <= {0, 1}
        assert sorted(p.name for p in (out.parent / "explain").glob("row*.png")) == sorted(
            f"row{r}.png" for r in scored["row"]
        )
