"""`mammofuse runs`: every run of a work folder in one table, from the files the runs left.

A study accumulates runs: the trained model, its cross-validations, a comparison's presets, a learning
curve's shares, tuning studies. This reads each run folder's own files (config, epochs, metrics, folds)
and says what it is, how far it got and what it measured, so nobody has to open them one by one to see
which is finished, which is running now (a process holds its folder), which stopped half-way and which
figure belongs to which setup. Nothing is trained or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mammofuse.config import ConfigError
from mammofuse.evaluation.result import AucInterval
from mammofuse.models.fusion import headline
from mammofuse.problems import DataError
from mammofuse.runs import Run, Work
from mammofuse.storage import LOCK_NAME, in_use
from mammofuse.ui import counted


@dataclass(frozen=True)
class RunSummary:
    name: str
    kind: str  # "run", "cv", "nested cv", "cv on 25%" (a learning curve's share), "tune"
    model: str
    progress: str  # "12/15 epochs", "5/5 folds", "8 trials"
    auc: str  # the headline AUC with its interval ("" before evaluation)
    clinical: str  # the clinical-only model's, beside it
    changed: str  # when a file of the run last changed (UTC)
    problem: str = ""  # why its files could not be read ("unreadable" runs)
    optimism: str = ""  # the model's apparent minus held-out AUC ("" where not measured)
    stale: str = ""  # how its breasts differ from the work folder's now (its figures are of other data)


def newest(path: Path) -> str:
    """When a file, or the newest file in a folder, last changed (UTC, to the minute; "" for none)."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stamps = [p.stat().st_mtime for p in files]
    return datetime.fromtimestamp(max(stamps), UTC).strftime("%Y-%m-%d %H:%M") if stamps else ""


def _text(auc: AucInterval | None) -> str:
    return "" if auc is None else auc.text


def _optimism(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def _holder(folder: Path) -> str:
    """Who holds a folder's lock ("mammofuse cv (process 123)"; "" where it says nothing or was let go)."""
    try:
        return (folder / LOCK_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _running(run: Run) -> str:
    """What progress adds while a process holds the run folder, or a tuning study's trial (each trial holds
    its own folder while it trains, the study's only between trials): ", running (mammofuse cv (process
    123))"."""
    held = [folder for folder in (run.dir, *sorted(run.dir.glob("trial-*"))) if in_use(folder)]
    if not held:
        return ""
    holders = "; ".join(filter(None, map(_holder, held)))
    return f", running ({holders})" if holders else ", running"


def summarise(run: Run) -> RunSummary:
    """What a run folder holds, from its files alone (and whether a process holds it now)."""
    summary = _summarise(run)
    return replace(summary, progress=summary.progress + _running(run))


def _summarise(run: Run) -> RunSummary:
    trials = sorted(run.dir.glob("trial-*"))
    if trials or (run.dir / "best.toml").is_file():  # `mammofuse tune`
        best = "best.toml written" if (run.dir / "best.toml").is_file() else "no best.toml yet"
        return RunSummary(
            run.name, "tune", "", f"{counted(len(trials), 'trial')}, {best}", "", "", newest(run.dir)
        )
    if not run.config.is_file():  # stopped before its training began
        return RunSummary(run.name, "run", "", "not started", "", "", newest(run.dir))
    cfg = run.read_config()
    model = headline(cfg.model)
    if run.is_cv:
        kind = "nested cv" if run.tuning.is_file() else "cv"
        if cfg.data.train_fraction < 1:  # a learning curve's share
            kind += f" on {cfg.data.train_fraction:.0%}"
        done = sum(fold.metrics.is_file() for fold in run.fold_runs())
        total = cfg.split.folds * cfg.split.repeats  # cv writes the folds and repeats it uses
        auc = clinical = optimism = ""
        if run.metrics.is_file():
            pooled = run.read_cv_evaluation()
            auc, clinical = pooled.model.auc.text, _text(pooled.baseline.auc if pooled.baseline else None)
            optimism = _optimism(pooled.model.optimism)
        progress = f"{done}/{total} folds"
        return RunSummary(run.name, kind, model, progress, auc, clinical, newest(run.dir), optimism=optimism)
    epochs = run.read_epochs()
    total = cfg.train.epochs
    progress = f"{0 if epochs is None else len(epochs)}/{total} epochs"
    auc = clinical = optimism = ""
    if run.metrics.is_file():
        result = run.read_evaluation()
        auc, optimism = result.model.test.auc.text, _optimism(result.model.optimism)
        clinical = _text(result.baseline.test.auc if result.baseline else None)
    elif epochs is not None and len(epochs) >= total:
        progress += ", not evaluated"
    return RunSummary(run.name, "run", model, progress, auc, clinical, newest(run.dir), optimism=optimism)


KEY = ["patient_id", "side"]


def _now(work: Work) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The work folder's split (patient_id, side, split, label) and labelled breasts (patient_id, side,
    label) as they are now; None where not there or not readable (the runs are listed all the same)."""

    def read(path: Path, table: Callable[[], pd.DataFrame], columns: list[str]) -> pd.DataFrame | None:
        try:
            return table()[columns] if path.is_file() else None
        except (DataError, OSError, ValueError, KeyError):
            return None

    splits = read(work.splits, work.read_splits, [*KEY, "split", "label"])  # None too for cv folds
    return splits, read(work.manifest, lambda: work.read_manifest()[0], [*KEY, "label"])


def _stale(run: Run, splits: pd.DataFrame | None, labels: pd.DataFrame | None) -> str:
    """Where a run's breasts are no longer the work folder's (split or ingest made again since, labels
    corrected): how many of them moved or changed label, else "". A run keeps the data.csv it was trained on
    (a cross-validation or a tuning study, its first fold's or trial's): its split is held to splits.csv
    (a cross-validation's folds are its own: its labels only, to the manifest)."""
    trials = [Run(d) for d in sorted(run.dir.glob("trial-*"))]
    trained = next((r for r in (run, *run.fold_runs(), *trials) if r.data.is_file()), None)
    if trained is None:
        return ""
    data = trained.read_data()
    if run.is_cv or splits is None:
        now, columns = labels, [*KEY, "label"]
    else:
        now, columns = splits, [*KEY, "split", "label"]
    if now is None:
        return ""
    held = data[columns].merge(now[columns], how="left", indicator=True)
    moved = int((held["_merge"] == "left_only").sum())
    if not moved:
        return ""
    against = "the manifest's labels" if now is labels else "splits.csv"
    return (
        f"{moved} of its {len(data)} breasts are not in {against} as they were when it was trained (the "
        "split or ingest was made again, or a label corrected): its figures are of the data before"
    )


def survey(work: Work) -> list[RunSummary]:
    """Every run folder of a work folder, by name; one whose files cannot be read says why in its row, one
    trained on breasts the work folder no longer holds so says why (`stale`)."""
    out = []
    splits, labels = _now(work)
    for folder in sorted(d for d in (work.dir / "runs").glob("*") if d.is_dir()):
        try:
            run = Run(folder)
            out.append(replace(summarise(run), stale=_stale(run, splits, labels)))
        except (DataError, ConfigError, OSError, ValueError) as exc:  # pydantic's and pandas' errors too
            out.append(RunSummary(folder.name, "unreadable", "", "", "", "", newest(folder), str(exc)))
    return out
