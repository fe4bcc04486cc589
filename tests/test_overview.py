"""`mammofuse runs`: every run of a work folder, from its files."""

import shutil
import subprocess
import sys

from mammofuse.cli import main
from mammofuse.overview import survey
from mammofuse.runs import Run, Work

HOLD = """
import pathlib, sys, time
from mammofuse.storage import locked
with locked(pathlib.Path(sys.argv[1]), sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def rows(work):
    return {s.name: s for s in survey(Work(work))}


def test_a_cross_validation_a_run_and_what_is_unfinished_or_unreadable(cv_copy, trained_master, capsys):
    cohort, cv_dir = cv_copy
    work = cohort / "work"
    shutil.copytree(trained_master, work / "runs" / "single")
    summary = rows(work)
    cv, single = summary["fast-cv"], summary["single"]
    pooled = Run(cv_dir).read_cv_evaluation()
    assert (cv.kind, cv.progress, cv.auc) == ("cv", "6/6 folds", pooled.model.auc.text)
    assert cv.clinical == pooled.baseline.auc.text and cv.optimism == f"{pooled.model.optimism:+.3f}"
    evaluation = Run(trained_master).read_evaluation()
    epochs = len(Run(trained_master).read_epochs())
    assert (single.kind, single.progress) == ("run", f"{epochs}/{epochs} epochs")
    assert single.auc == evaluation.model.test.auc.text
    assert single.optimism == f"{evaluation.model.optimism:+.3f}"

    Run(cv_dir).fold(1, 2).metrics.unlink()  # a fold left to finish
    Run(work / "runs" / "single").metrics.unlink()
    (work / "runs" / "broken").mkdir()
    (work / "runs" / "broken" / "config.toml").write_text("[train\n")
    (work / "runs" / "stopped").mkdir()  # stopped while preprocessing, before its config was written
    (work / "runs" / "stopped" / "preprocess_problems.csv").write_text("")
    trial = work / "runs" / "fast-tune" / "trial-003"  # a tuning study training its fourth trial
    trial.mkdir(parents=True)
    holders = [
        subprocess.Popen([sys.executable, "-c", HOLD, str(folder), what], stdout=subprocess.PIPE, text=True)
        for folder, what in ((cv_dir, "cv"), (trial, "tune trial 3"))
    ]
    try:  # other processes training them now
        assert all(holder.stdout.readline().strip() == "held" for holder in holders)
        summary = rows(work)
        assert summary["fast-cv"].progress.endswith(f", running (mammofuse cv (process {holders[0].pid}))")
        tune = summary["fast-tune"]
        assert tune.kind == "tune"
        assert tune.progress.endswith(f", running (mammofuse tune trial 3 (process {holders[1].pid}))")
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    summary = rows(work)
    assert summary["fast-cv"].progress == "5/6 folds"
    assert summary["single"].progress.endswith("not evaluated") and summary["single"].auc == ""
    assert summary["broken"].kind == "unreadable" and "not valid TOML" in summary["broken"].problem
    assert summary["stopped"].progress == "not started"

    assert main(["runs", str(work)]) == 0
    out = capsys.readouterr().out
    assert "fast-cv" in out and "5/6 folds" in out and "5 runs in" in out and "broken: unreadable:" in out
    assert main(["runs", str(cohort)]) == 2  # not a work folder
    assert "no runs/ folder" in capsys.readouterr().out


def test_a_terminal_too_narrow_for_the_table_gets_a_line_a_run_nothing_cut(tmp_path, monkeypatch, capsys):
    from mammofuse import overview
    from mammofuse.ui import console

    (tmp_path / "runs").mkdir()
    summary = overview.RunSummary(
        "regularized-cv", "cv", "resnet18 (imagenet)", "5/5 folds", "0.712 [0.671, 0.750]",
        "0.655 [0.612, 0.699]", "2026-11-28 17:48", optimism="+0.201",
    )  # fmt: skip
    monkeypatch.setattr(overview, "survey", lambda work: [summary])
    monkeypatch.setattr(console, "width", 80)  # a terminal's default; a log's
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "regularized-cv: cv, 5/5 folds; AUC [95% CI] 0.712 [0.671, 0.750]; clinical only 0.655" in out
    assert "network resnet18 (imagenet); changed (UTC) 2026-11-28 17:48" in out and "…" not in out
    monkeypatch.setattr(console, "width", 160)
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "┃ run" in out and "│ 0.712 [0.671, 0.750] │" in out and "…" not in out
