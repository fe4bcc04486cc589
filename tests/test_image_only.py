"""A study without clinical data: `[clinical] use = false` (or `path = ""`) runs every stage with an
image-only model, and says so."""

import json

import pandas as pd

from mammofuse.cli import main
from tests.cohort.helpers import edit_config


def test_every_stage_runs_image_only_and_says_so(ready, capsys):
    edit_config(ready, clinical={"use": False})
    config, preset, work = str(ready / "cohort.toml"), str(ready.parent / "fast.toml"), ready / "image-only"
    assert main(["ingest", config, "--out", str(work)]) == 0
    manifest = pd.read_csv(work / "manifest.csv")
    assert not {"age", "her2", "grade"} & set(manifest.columns)
    assert "missing clinical value" not in (work / "exclusions.csv").read_text()  # no clinical drops
    for stage in (["preprocess"], ["split"], ["train", "--preset", preset]):
        assert main([stage[0], config, "--work", str(work), *stage[1:]]) == 0
    run_dir = work / "runs" / "fast"
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "image only" in out and "clinical only" not in out and "image + clinical" not in out
    assert main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.html").read_text()
    assert "image only" in report and "image + clinical" not in report
    argv = ["predict", str(run_dir / "bundle"), "--images", str(ready / "dicom")]
    assert main([*argv, "--out", str(work / "p.csv")]) == 0
    predicted = pd.read_csv(work / "p.csv", dtype={"reason": str}).fillna({"reason": ""})
    assert (predicted["reason"] == "").mean() > 0.9  # no clinical CSV needed, none missing
    assert not (run_dir / "bundle" / "baseline.json").exists()  # no clinical-only model to carry
    capsys.readouterr()
    argv += ["--labels", str(ready / "labels.csv")]
    assert main([*argv, "--out", str(work / "site2" / "p.csv")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "│ image only │" in out and "clinical only" not in out and "carries no clinical-only" not in out
    recalibrated = work / "site2" / "bundle"  # no clinical-only model to refit beside it
    assert main(["recalibrate", *argv[1:], "--out", str(recalibrated)]) == 0
    assert "clinical only" not in capsys.readouterr().out
    assert json.loads((recalibrated / "recalibration.json").read_text())["clinical"] is None


def test_a_model_with_clinical_inputs_asks_for_them(trained_master, capsys):
    cohort = trained_master.parents[2]
    argv = ["predict", str(trained_master / "bundle"), "--images", str(cohort / "dicom"), "--out", "x.csv"]
    assert main(argv) == 2
    assert "this model uses clinical data (age," in capsys.readouterr().out
