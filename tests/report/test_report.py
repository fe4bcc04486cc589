import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from tests.cohort.helpers import edit_config
from tests.training.fixtures import train_variant

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def report(trained_master, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_master, run)
    assert main(["explain", str(run), "--n", "1"]) == 0
    assert main(["report", str(run)]) == 0
    return run / "report.html"


class TestReport:
    def test_is_one_self_contained_page(self, report):
        html = report.read_text()
        sources = re.findall(r'src="([^"]+)"', html)
        assert len(sources) >= 6 and all(s.startswith("data:image/png;base64,") for s in sources)
        assert "http://" not in html and "https://" not in html

    def test_shows_cohort_metrics_with_intervals_baseline_config_and_versions(self, report):
        html = report.read_text()
        for text in (
            "Cohort",
            "test AUC [95 % CI]",
            "clinical only",
            "What the images add",
            "Grad-CAM",
            "[model]",
            "torchvision",
            "EIC positive (1)",
        ):
            assert text in html, text

    def test_answers_a_clinical_reviewer_first_questions(self, report, trained_master):
        """Where the breasts went, Table 1, the operating point with intervals, calibration, the decision
        curve, subgroups, the endpoint and the model card (issue 12)."""
        import pandas as pd

        html = report.read_text()
        run = report.parent
        data = pd.read_csv(run / "data.csv")
        truth = pd.read_csv(trained_master.parents[2] / "truth.csv")
        assert f"{len(truth)} breasts of {truth['patient_id'].nunique()} patients" in html  # the flow's start
        assert "Flow of breasts from the export to the analysis" in html
        assert "Table 1: the breasts analysed" in html
        for variable in ("age, median [IQR]", "her2, n (%)", "density, n (%)", "patients"):
            assert variable in html, variable
        test = data[data["split"] == "test"]
        assert f"<td>{len(test)}</td>" in html  # the test column of Table 1
        assert "<th>all</th><th>EIC positive (1)</th><th>EIC negative (0)</th>" in html  # its classes, named
        metrics = __import__("json").loads((run / "metrics.json").read_text())
        confusion = metrics["model"]["test"]["at_youden"]["confusion"]
        row = "".join(f"<td>{confusion[k]}</td>" for k in ("tp", "fn", "fp", "tn"))
        assert row in html  # the confusion matrix
        low, high = metrics["model"]["test"]["at_youden_ci"]["sensitivity"]
        assert f"[{low:.2f}, {high:.2f}]" in html  # sensitivity with its interval
        assert "calibration [95 % CI]" in html and "slope" in html
        assert "Decision curve" in html and "Subgroups (test breasts)" in html
        assert "a group gets its AUC without one" in html  # and says why
        assert "What each input contributes" in html and "clinical at its training mean" in html
        assert "Endpoint: EIC" in html and "invasive_fraction &lt; 75 %" in html
        text = " ".join(html.split())
        assert "so it flatters the model; the test AUC is the estimate" in text  # beside the val AUC column
        assert "A synthetic cohort written by" in html
        assert "Model card" in html and "Intended use" in html
        assert "<details><summary>The run's full configuration (TOML)</summary>" in html

    def test_says_on_what_hardware_and_with_what_precision_the_model_was_trained(self, report):
        html = report.read_text()
        table = html[html.index("How it was trained") : html.index("<h2>Versions")]
        cpu = f"<td>CPU ({torch.backends.cpu.get_cpu_capability()})</td>"  # vector instructions, e.g. AVX512
        for text in (cpu, "<td>32-true</td>", "<td>no augmentation</td>", "from 1"):
            assert text in table, text

    def test_identifies_cases_by_row_number_never_by_patient(self, report):
        html = report.read_text()
        assert "row " in html and not re.search(r"MF\d{5}", html)

    @pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (.ci/run installs Debian's chromium)")
    def test_loads_with_its_figures_in_a_real_browser(self, report, tmp_path):
        result = subprocess.run(
            [
                CHROMIUM,
                *OFFLINE_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                report.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        loaded = re.search(r'data-figures-loaded="(\d+)/(\d+)"', result.stdout)
        assert loaded, result.stderr[-2000:]
        ok, total = map(int, loaded.groups())
        assert total >= 6 and ok == total
        shot = tmp_path / "page.png"  # the whole page as a person sees it at 1,400 px
        subprocess.run(
            [
                CHROMIUM,
                *OFFLINE_FLAGS,
                f"--user-data-dir={tmp_path / 'profile'}",
                "--window-size=1400,9000",
                f"--screenshot={shot}",
                report.as_uri(),
            ],
            capture_output=True,
            timeout=120,
        )
        from PIL import Image

        with Image.open(shot) as image:
            assert image.width == 1400
            inked = (
                Image.eval(image.convert("L"), lambda v: 255 if v < 200 else 0).getbbox() or (0, 0, 0, 0)
            )[3]
        assert inked > 3000  # the page is drawn, figures and tables included, well down the screenshot


def test_a_temporal_split_tests_the_latest_patients_and_the_report_says_so(ready, capsys):
    """The ready cohort's exams dated two days apart per patient, in an order unrelated to their numbers."""
    work = ready / "work"
    patients = sorted(pd.read_csv(work / "manifest.csv", dtype=str)["patient_id"].unique())
    order = pd.Series(np.random.default_rng(0).permutation(len(patients)), index=patients)
    for name in ("manifest.csv", "preprocessed.csv"):
        table = pd.read_csv(work / name, dtype=str)
        day = pd.Timestamp("2021-01-01") + pd.to_timedelta(2 * table["patient_id"].map(order), unit="D")
        table["cc_exam_date"] = table["mlo_exam_date"] = day.dt.strftime("%Y%m%d")
        table.to_csv(work / name, index=False)
    edit_config(ready, split={"method": "temporal"})
    capsys.readouterr()
    assert main(["split", str(ready / "cohort.toml")]) == 0
    shown = capsys.readouterr().out
    assert "temporal (exam dates): the test split is the patients examined last" in shown and "exams" in shown
    splits = pd.read_csv(work / "splits.csv", dtype=str).merge(table[["patient_id", "side", "cc_exam_date"]])
    test = splits["split"] == "test"
    assert splits.loc[test, "cc_exam_date"].min() > splits.loc[~test, "cc_exam_date"].max()
    run = train_variant(ready, "dated", "")
    assert main(["evaluate", str(run)]) == 0 and main(["report", str(run)]) == 0
    html = " ".join((run / "report.html").read_text().split())
    assert "the test split is the patients examined last (by their exams' StudyDate)" in html
    first, last = (
        pd.Timestamp(splits.loc[test, "cc_exam_date"].agg(f)).strftime("%Y-%m-%d") for f in ("min", "max")
    )
    assert f"<td>{first} to {last}</td>" in html


def test_a_damaged_metrics_file_is_named_with_the_command_that_makes_it_again(
    trained_master, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained_master, run)
    metrics = run / "metrics.json"
    metrics.write_text(metrics.read_text(encoding="utf-8")[:100], encoding="utf-8")  # cut short
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"{metrics}: not as `mammofuse evaluate {run}` writes it (Invalid JSON" in out
    assert "Traceback" not in out
    assert main(["evaluate", str(run)]) == 0 and main(["report", str(run)]) == 0


def test_a_figure_removed_from_the_run_is_named_with_the_command_that_draws_it(report, capsys):
    """A picture the run's files list but its folder lacks (a gallery case, a figure) was a traceback."""
    run = report.parent
    case = next(p for p in (run / "explain").glob("*.png") if p.name != "cascade.png")
    case.unlink()
    (run / "figures" / "roc.png").unlink()
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    line = (
        f"not found in the run's folder: figures/roc.png, explain/{case.name} (run "
        f"`mammofuse evaluate {run}` and `mammofuse explain {run}` to draw them"
    )
    assert line in out and "Traceback" not in out
    assert line.replace("'", "&#39;") in " ".join(report.read_text().split())
    assert main(["evaluate", str(run)]) == 0 and main(["explain", str(run), "--n", "1"]) == 0
    assert main(["report", str(run)]) == 0 and "not found in the run" not in report.read_text()


def test_predictions_without_a_test_breast_are_named_with_the_command_that_makes_them_again(
    trained_master, tmp_path, capsys
):
    """A predictions.csv that lost its test rows (the subgroup table stopped with a pandas ValueError)."""
    run = tmp_path / "run"
    shutil.copytree(trained_master, run)
    predictions = pd.read_csv(run / "predictions.csv", dtype=str)
    predictions[predictions["split"] != "test"].to_csv(run / "predictions.csv", index=False)
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"predictions.csv: not as `mammofuse evaluate {run}` writes it (no test breast in it)" in out
    assert "Traceback" not in out
