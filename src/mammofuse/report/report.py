"""`mammofuse report RUN_DIR`: RUN_DIR/report.html, self-contained (figures embedded as data URIs).

Cases appear by row number, never by patient ID. The page marks itself with the number of figures
that decoded (`data-figures-loaded` on <body>) so a headless browser can check it.
"""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from mammofuse.config import Config, to_toml
from mammofuse.deploy.bundle import versions
from mammofuse.evaluation.cv import fold_table
from mammofuse.evaluation.evaluate import metric_rows
from mammofuse.evaluation.result import p_text
from mammofuse.problems import EXCLUDED, WARNING
from mammofuse.runs import Run, Work

CV_FIGURES = {
    "roc": "ROC of the out-of-fold predictions",
    "calibration": "Calibration of the out-of-fold predictions",
    "overfitting": "Train vs validation AUC per epoch, every fold",
}
FIGURES = {
    "training": "Training curves",
    "roc": "ROC",
    "calibration": "Calibration",
    "pr": "Precision-recall",
}


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _dropped(run: Run, work: Work) -> list[tuple[str, int, str]]:
    """Every reason a breast was left out or kept with a warning (ingest, then this run's preprocessing),
    counted: (reason, count, 'left out' | 'kept')."""
    dropped: Counter[tuple[str, str]] = Counter()
    for path in (work.exclusions, run.preprocess_problems):
        if path.is_file():
            table = pd.read_csv(path, dtype=str)
            severity = table["severity"] if "severity" in table else pd.Series(EXCLUDED, index=table.index)
            kept = severity.map({WARNING: "kept, with a warning"}).fillna("left out")
            dropped.update(zip(table["category"].fillna(""), kept, strict=True))
    return [(reason, n, kept) for (reason, kept), n in dropped.most_common()]


def _cohort(run: Run, work: Work) -> dict:
    data = run.read_data()
    per_split = data.groupby("split")["label"].agg(breasts="size", positive="sum")
    per_split["negative"] = per_split["breasts"] - per_split["positive"]
    order = [s for s in ("train", "val", "test") if s in per_split.index]
    return {
        "kept": len(data),
        "splits": [{"split": s, **{k: int(v) for k, v in per_split.loc[s].items()}} for s in order],
        "dropped": _dropped(run, work),
    }


def _figures(run: Run, titles: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"title": title, "src": data_uri(run.figures / f"{name}.png")}
        for name, title in titles.items()
        if (run.figures / f"{name}.png").is_file()
    ]


def _environment() -> Environment:
    return Environment(loader=PackageLoader("mammofuse.report"), autoescape=select_autoescape(["html", "j2"]))


def _common(run: Run, cfg: Config) -> dict[str, Any]:
    return {
        "title": f"mammofuse report: {run.name}",
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "labels": cfg.labels,
        "config": to_toml(cfg),
        "versions": versions(),
        "model": cfg.model,
    }


def build_compare_report(work: Work, table: pd.DataFrame, runs: dict[str, Run], figure: Path) -> Path:
    """WORK/compare.html: the comparison table and the overfitting picture of every setup."""
    first = runs[next(iter(runs))]
    cfg = first.read_config()
    result = first.read_cv_evaluation()

    def fmt(value: object, spec: str) -> str:
        return "" if pd.isna(value) else format(value, spec)

    rows = []
    for r in table.itertuples():
        diff = "" if pd.isna(r.auc_diff) else f"{r.auc_diff:+.3f} [{r.diff_low:+.3f}, {r.diff_high:+.3f}]"
        folds = "" if pd.isna(r.fold_auc_mean) else f"{r.fold_auc_mean:.3f} ± {r.fold_auc_sd:.3f}"
        rows.append(
            {
                "preset": r.preset,
                "auc": f"{r.pooled_auc:.3f} [{r.auc_low:.3f}, {r.auc_high:.3f}]",
                "folds": folds,
                "diff": diff,
                "p": "" if pd.isna(r.p) else p_text(r.p).removeprefix("p = "),
                "p_holm": fmt(r.p_holm, ".3f"),
            }
        )
    html = (
        _environment()
        .get_template("compare.html.j2")
        .render(
            **{**_common(first, cfg), "title": "mammofuse comparison", "model": None},
            rows=rows,
            first=table["preset"].iloc[0],
            folds=result.folds,
            repeats=result.repeats,
            comparisons=int(table["p"].notna().sum()),
            figures=[
                {
                    "title": "Train (dashed) vs validation AUC per epoch, every fold of every setup",
                    "src": data_uri(figure),
                }
            ],
        )
    )
    work.compare_report.write_text(html, encoding="utf-8")
    return work.compare_report


def build_cv_report(run: Run) -> Path:
    """The page of a cross-validation: pooled out-of-fold metrics, folds, figures, the fold ensemble."""
    result = run.read_cv_evaluation()
    cfg = run.read_config()
    members = result.folds * result.repeats
    bundle_text = (
        f"The fold ensemble in {run.bundle.name}/: the {members} fold models, whose probabilities "
        "`mammofuse predict` averages (with their spread per breast); Grad-CAM maps are averaged over them. "
        "The figures above are of the fold models on breasts they never saw."
    )
    models = [(result.model_name, result.model)]
    if result.baseline is not None:
        models.append(("clinical only (logistic regression, same folds)", result.baseline))
    html = (
        _environment()
        .get_template("cv.html.j2")
        .render(
            **_common(run, cfg),
            result=result,
            models=models,
            dropped=_dropped(run, Work(cfg.work_dir)),
            folds=fold_table(run, result),
            figures=_figures(run, CV_FIGURES),
            bundle_text=bundle_text,
        )
    )
    run.report.write_text(html, encoding="utf-8")
    return run.report


def build_report(run_dir: Path) -> Path:
    """Write the run's report.html from its files (evaluate first; explain for the gallery)."""
    run = Run(run_dir)
    if run.is_cv:
        return build_cv_report(run)
    evaluation = run.read_evaluation()
    cfg = run.read_config()
    figures = _figures(run, FIGURES)
    gallery = []
    if run.explain_index.is_file():
        for r in pd.read_csv(run.explain_index).itertuples():
            caption = f"{r.category.replace('-', ' ')}: row {r.row}, label {r.label}, p = {r.probability:.2f}"
            gallery.append({"src": data_uri(run.explain / str(r.file)), "caption": caption})
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            **_common(run, cfg),
            cohort=_cohort(run, Work(cfg.work_dir)),
            metrics=metric_rows(evaluation),
            threshold=evaluation.model.threshold,
            test=evaluation.model.test,
            comparison=evaluation.comparison,
            warnings=evaluation.warnings,
            figures=figures,
            gallery=gallery,
        )
    )
    run.report.write_text(html, encoding="utf-8")
    return run.report
