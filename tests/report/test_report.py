import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mammofuse.cli import main

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
