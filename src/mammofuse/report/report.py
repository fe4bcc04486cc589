"""`mammofuse report RUN_DIR`: RUN_DIR/report.html, self-contained (figures embedded as data URIs).

Cases appear by row number, never by patient ID. The page marks itself with the number of figures
that decoded (`data-figures-loaded` on <body>) so a headless browser can check it.
"""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from mammofuse.config import to_toml
from mammofuse.deploy.bundle import versions
from mammofuse.evaluation.evaluate import metric_rows
from mammofuse.runs import Run, Work

FIGURES = {
    "training": "Training curves",
    "roc": "ROC",
    "calibration": "Calibration",
    "pr": "Precision-recall",
}


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _cohort(run: Run, work: Work) -> dict:
    data = run.read_data()
    per_split = data.groupby("split")["label"].agg(breasts="size", positive="sum")
    per_split["negative"] = per_split["breasts"] - per_split["positive"]
    order = [s for s in ("train", "val", "test") if s in per_split.index]
    dropped: Counter[str] = Counter()
    for path in (work.exclusions, run.preprocess_problems):
        if path.is_file():
            dropped.update(pd.read_csv(path, dtype=str)["category"].dropna())
    return {
        "kept": len(data),
        "splits": [{"split": s, **{k: int(v) for k, v in per_split.loc[s].items()}} for s in order],
        "dropped": dropped.most_common(),
    }


def build_report(run_dir: Path) -> Path:
    """Write the run's report.html from its files (evaluate first; explain for the gallery)."""
    run = Run(run_dir)
    evaluation = run.read_evaluation()
    cfg = run.read_config()
    figures = [
        {"title": title, "src": data_uri(run.figures / f"{name}.png")}
        for name, title in FIGURES.items()
        if (run.figures / f"{name}.png").is_file()
    ]
    gallery = []
    if run.explain_index.is_file():
        for r in pd.read_csv(run.explain_index).itertuples():
            caption = f"{r.category.replace('-', ' ')}: row {r.row}, label {r.label}, p = {r.probability:.2f}"
            gallery.append({"src": data_uri(run.explain / str(r.file)), "caption": caption})
    env = Environment(loader=PackageLoader("mammofuse.report"), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        title=f"mammofuse report: {run.name}",
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cohort=_cohort(run, Work(cfg.work_dir)),
        labels=cfg.labels,
        metrics=metric_rows(evaluation),
        threshold=evaluation.model.threshold,
        test=evaluation.model.test,
        comparison=evaluation.comparison,
        warnings=evaluation.warnings,
        figures=figures,
        gallery=gallery,
        config=to_toml(cfg),
        versions=versions(),
        model=cfg.model,
    )
    run.report.write_text(html, encoding="utf-8")
    return run.report
