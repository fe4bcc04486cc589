"""`mammofuse report RUN_DIR`: RUN_DIR/report.html, self-contained (figures embedded as data URIs).

Cases appear by row number, never by patient ID. The page marks itself with the number of figures
that decoded (`data-figures-loaded` on <body>) so a headless browser can check it.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from mammofuse.bundle import versions
from mammofuse.cohort.ingest import EXCLUSIONS
from mammofuse.config import to_toml
from mammofuse.evaluation.evaluate import metric_rows
from mammofuse.explain.explain import EXPLAIN
from mammofuse.imaging.preprocess import PREPROCESS_PROBLEMS
from mammofuse.problems import DataError
from mammofuse.training.run import load_run_config

REPORT = "report.html"
FIGURES = {
    "training": "Training curves",
    "roc": "ROC",
    "calibration": "Calibration",
    "pr": "Precision-recall",
}


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _cohort(run_dir: Path, work_dir: Path) -> dict:
    data = pd.read_csv(run_dir / "data.csv")
    per_split = data.groupby("split")["label"].agg(breasts="size", positive="sum")
    per_split["negative"] = per_split["breasts"] - per_split["positive"]
    order = [s for s in ("train", "val", "test") if s in per_split.index]
    dropped: Counter[str] = Counter()
    for name in (EXCLUSIONS, PREPROCESS_PROBLEMS):
        if (work_dir / name).is_file():
            dropped.update(pd.read_csv(work_dir / name, dtype=str)["category"].dropna())
    return {
        "kept": len(data),
        "splits": [{"split": s, **{k: int(v) for k, v in per_split.loc[s].items()}} for s in order],
        "dropped": dropped.most_common(),
    }


def build_report(run_dir: Path) -> Path:
    """Write RUN_DIR/report.html from the run's files (evaluate first; explain for the gallery)."""
    if not (run_dir / "metrics.json").is_file():
        raise DataError(f"{run_dir}: no metrics.json; run `mammofuse evaluate {run_dir}` first")
    cfg = load_run_config(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    figures = [
        {"title": title, "src": data_uri(run_dir / "figures" / f"{name}.png")}
        for name, title in FIGURES.items()
        if (run_dir / "figures" / f"{name}.png").is_file()
    ]
    gallery = []
    index = run_dir / EXPLAIN / "index.csv"
    if index.is_file():
        for r in pd.read_csv(index).itertuples():
            caption = f"{r.category.replace('-', ' ')}: row {r.row}, label {r.label}, p = {r.probability:.2f}"
            gallery.append({"src": data_uri(run_dir / EXPLAIN / r.file), "caption": caption})
    env = Environment(loader=PackageLoader("mammofuse.report"), autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        title=f"mammofuse report: {run_dir.name}",
        created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cohort=_cohort(run_dir, cfg.work_dir),
        metrics=metric_rows(metrics),
        threshold=metrics["model"]["test"]["at_youden"]["threshold"],
        test=metrics["model"]["test"],
        comparison=metrics.get("comparison"),
        figures=figures,
        gallery=gallery,
        config=to_toml(cfg),
        versions=versions(),
        model=cfg.model,
    )
    out = run_dir / REPORT
    out.write_text(html, encoding="utf-8")
    return out
