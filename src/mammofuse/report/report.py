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

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from mammofuse.config import Config, to_toml
from mammofuse.data.splits import breast_dates, split_table
from mammofuse.deploy.bundle import CARD, Bundle, ensemble_problem, versions
from mammofuse.evaluation import metrics
from mammofuse.evaluation.compare import maps_rows
from mammofuse.evaluation.curve import verdict, versus
from mammofuse.evaluation.cv import fold_table
from mammofuse.evaluation.evaluate import metric_rows
from mammofuse.evaluation.result import (
    APPARENT,
    BASELINE,
    AtThreshold,
    Calibration,
    ExternalValidation,
    OneClassValidation,
    apparent_text,
    p_text,
)
from mammofuse.explain.checks import summary_lines
from mammofuse.explain.overlays import SCALING
from mammofuse.models import describe
from mammofuse.problems import WARNING
from mammofuse.report import clinical
from mammofuse.runs import Run, Work, changes_text, data_changes, read_json, read_problems, read_table
from mammofuse.storage import replace_text
from mammofuse.ui import console

BINS = "(quantile bins with 95 % intervals over patients; line: the logistic recalibration, its slope)"
CV_FIGURES = {
    "roc": "ROC of the out-of-fold predictions",
    "calibration": f"Calibration of the out-of-fold predictions {BINS}",
    "decision": "Decision curve of the out-of-fold predictions (shaded: 95 % bands over patients)",
    "overfitting": "Train vs validation AUC per epoch, every fold",
}
FIGURES = {
    "roc": "ROC with the operating points",
    "calibration": f"Calibration {BINS}",
    "decision": "Decision curve: net benefit of acting on the model (shaded: 95 % bands over patients)",
    "pr": "Precision-recall (AP: average precision, the area under the steps, with its 95 % interval over "
    "patients; a random ranking's is the prevalence)",
    "training": "Training curves",
}
WIDE = {"training", "flow"}  # figures shown at the page's full width


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _dropped(run: Run, work: Work) -> list[tuple[str, int, str]]:
    """Every reason a breast was left out or kept with a warning (ingest, then this run's preprocessing),
    counted: (reason, count, 'left out' | 'kept')."""
    dropped: Counter[tuple[str, str]] = Counter()
    for path in (work.exclusions, run.preprocess_problems):
        table = read_problems(path)
        kept = table["severity"].map({WARNING: "kept, with a warning"}).fillna("left out")
        dropped.update(zip(table["category"], kept, strict=True))
    return [(reason, n, kept) for (reason, kept), n in dropped.most_common()]


def _cohort(run: Run, work: Work) -> dict:
    data = run.read_data()
    split = run.read_config().split
    table = split_table(data, breast_dates(data, split.dated_by))
    order = [s for s in ("train", "val", "test") if s in table.index]
    return {
        "kept": len(data),
        "method": split.method,
        "date": split.date,
        "splits": [{"split": s, **table.loc[s].to_dict()} for s in order],
        "dated": "exams" in table,
        "dropped": _dropped(run, work),
    }


REDRAWS = {"figures": "mammofuse evaluate", "explain": "mammofuse explain"}  # the command that draws a folder


def _figures(run: Run, titles: dict[str, str], absent: list[Path]) -> list[dict[str, Any]]:
    """The figures of `titles` found in figures/; those its run's files say it has but are not there are added
    to `absent` (the training curves are drawn where epochs.csv is)."""
    figures = []
    for name, title in titles.items():
        path = run.figures / f"{name}.png"
        if path.is_file():
            figures.append({"title": title, "src": data_uri(path), "wide": name in WIDE})
        elif name != "training" or run.epochs.is_file():
            absent.append(path)
    return figures


def _absent_line(run: Run, absent: list[Path]) -> str | None:
    """The page's line for pictures that are not in the run's folder (removed since), said on the terminal
    too; None when none is missing."""
    if not absent:
        return None
    redraw = " and ".join(sorted({f"`{REDRAWS[p.parent.name]} {run.dir}`" for p in absent}))
    names = ", ".join(str(p.relative_to(run.dir)) for p in absent)
    line = f"not shown, not found in the run's folder: {names} (run {redraw} to draw them, then this report)"
    console.print(f"[yellow]warning:[/] {line}")
    return line


def _analysed(run: Run) -> pd.DataFrame:
    """The breasts a run analysed with their split; for a cross-validation, with their fold (first
    repeat, numbered from 1) instead."""
    if not run.is_cv:
        return run.read_data()
    folds = read_table(run.folds, "cv")
    first = folds[folds["repeat"] == 0][["patient_id", "side", "fold"]].assign(fold=lambda t: t["fold"] + 1)
    # every breast is held out by one fold (fold 1's data.csv alone lacks the training patients a
    # learning curve's share did not draw)
    data = pd.concat([run.fold(0, k).read_data() for k in range(first["fold"].max())])
    data = data.drop(columns=["split"]).drop_duplicates(["patient_id", "side"])
    return data.merge(first, on=["patient_id", "side"])


def _cohort_pages(run: Run, work: Work) -> dict[str, Any]:
    """The flow figure (drawn into the run's figures) and Table 1."""
    data = _analysed(run)
    manifest, info = work.read_manifest()
    run.figures.mkdir(exist_ok=True)
    path = run.figures / "flow.png"
    # a run on a share of its training patients lists those it did not draw (a cv holds every breast out)
    cfg = run.read_config()
    share = 1.0 if run.is_cv else cfg.data.train_fraction
    counts = clinical.flow(data, work, run.preprocess_problems, share)
    clinical.flow_figure(counts).savefig(path, dpi=100)
    title = f"Flow of breasts from the export to the analysis: {clinical.flow_text(counts)}"
    changes = data_changes(data, manifest, info["numeric"] + info["categorical"])
    changes.pop("new breast", None)  # ingested, then left out at preprocessing
    warning = (
        f"{work.manifest} was written again after this run was trained ({changes_text(changes)}): the "
        "flow's first two steps count that ingest, not the one this run's breasts came from"
        if changes
        else ""
    )
    flow = {"title": title, "src": data_uri(path), "wide": True, "warning": warning}
    classes = (f"{cfg.labels.positive} (1)", f"{cfg.labels.negative} (0)")  # as the split table names them
    return {"flow": flow, "table_one": clinical.table_one(data, info, classes)}


def _operating_rows(
    models: list[tuple[str, AtThreshold, dict | None, Calibration | None]],
) -> list[dict[str, Any]]:
    """Per model: the confusion matrix and every rate at its threshold with its interval, and calibration."""
    rows = []
    for name, at, ci, cal in models:
        ci = ci or {}
        rates = {k: metrics.rate_text(getattr(at, k), ci.get(k)) for k in metrics.RATES}
        calibration = cal.text if cal else ""
        row = {"name": name, "threshold": f"{at.threshold:.3f}", "confusion": at.confusion}
        rows.append({**row, "calibration": calibration, **rates})
    return rows


def _model_card(run: Run) -> str:
    card = run.bundle / CARD
    return card.read_text(encoding="utf-8") if card.is_file() else ""


def _subgroups(run: Run) -> list[dict[str, str]]:
    """Subgroup AUCs of the test breasts, or of the first repeat's out-of-fold predictions."""
    if run.is_cv:
        scored = run.read_oof()
        scored = scored[scored["repeat"] == 0]
    else:
        predictions = run.read_predictions()
        scored = predictions[predictions["split"] == "test"].copy()
        scored[["patient_id", "side"]] = scored["key"].str.rsplit("/", n=1, expand=True)
    data = _analysed(run).drop(columns=["label", "split", "fold"], errors="ignore")
    column = "score" if "score" in scored else "probability"  # out of fold: each fold on one scale (pooled)
    return clinical.subgroups(scored.merge(data, on=["patient_id", "side"], how="left"), column)


TRAINED_ON = ["device", "precision", "augment on", "loader processes", "compiled", "torch threads", "torch"]


def _trained_on(run: Run) -> list[dict[str, Any]]:
    """How the run was trained (RUN/hardware.json; every fold's for a cv run): one row per distinct
    setup, with the epochs (and folds) it trained. Runs trained before the file existed have none."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for trained in run.fold_runs() if run.is_cv else [run]:
        for session in trained.read_hardware() or []:  # none written (an older run) or unreadable: not shown
            setup = tuple(_shown(session.get(k, "")) for k in TRAINED_ON)
            epochs = f"from {session['from epoch'] + 1}"
            epochs = f"{trained.name}: {epochs}" if run.is_cv else epochs
            rows.setdefault(setup, {**dict(zip(TRAINED_ON, setup)), "epochs": []})["epochs"].append(epochs)
    return [{**row, "epochs": "; ".join(row["epochs"])} for row in rows.values()]


def _shown(value: object) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("mammofuse.report"), autoescape=select_autoescape(["html", "j2"]))
    env.globals["fewest_for_interval"] = metrics.FEWEST_FOR_INTERVAL
    return env


def _common(run: Run, cfg: Config) -> dict[str, Any]:
    return {
        "title": f"mammofuse report: {run.name}",
        "description": cfg.description,
        "model_card": _model_card(run),
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "labels": cfg.labels,
        "config": to_toml(cfg),
        "versions": versions(),
        "trained_on": _trained_on(run),
        "model": cfg.model,
        "architecture": describe(cfg.model),
        "kept": cfg.train.checkpoint,  # the epoch kept: "best" (chosen on validation) or "last"
        "ema": cfg.train.ema_epochs,  # > 0: the kept weights are a moving average over about that many epochs
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
                "apparent": fmt(getattr(r, "apparent_auc", np.nan), ".3f"),
                "optimism": fmt(getattr(r, "optimism", np.nan), "+.3f"),
            }
        )
    html = (
        _environment()
        .get_template("compare.html.j2")
        .render(
            **{**_common(first, cfg), "title": "mammofuse comparison", "model": None, "trained_on": []},
            rows=rows,
            maps=maps_rows(table) if "tumour_peak" in table else [],
            first=table["preset"].iloc[0],
            folds=result.folds,
            repeats=result.repeats,
            comparisons=int(table["p"].notna().sum()),
            figures=[
                {
                    "title": "Train (dashed; open points) vs validation AUC per epoch, every fold of "
                    "every setup",
                    "src": data_uri(figure),
                }
            ],
        )
    )
    replace_text(work.compare_report, html)
    return work.compare_report


def curve_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """The learning curve's rows as the terminal and the page show them."""

    def ci(centre: float, low: float, high: float, sign: str = "") -> str:
        if pd.isna(centre):
            return ""
        interval = "" if pd.isna(low) else f" [{low:{sign}.3f}, {high:{sign}.3f}]"
        return f"{centre:{sign}.3f}{interval}"

    def p(value: float) -> str:
        return "" if pd.isna(value) else p_text(value).removeprefix("p = ")

    rows = []
    for r in table.to_dict("records"):
        rows.append(
            {
                "preset": r["preset"],
                "share": f"{r['train_fraction']:.0%}",
                "train": f"{r['train_breasts']:.0f} ({r['train_positives']:.0f} positive)",
                "epochs": str(r["epochs"]),
                "auc": ci(r["auc"], r["auc_low"], r["auc_high"]),
                "clinical": ci(r.get("clinical_auc", np.nan), r.get("clinical_low"), r.get("clinical_high")),
                "train_auc": "" if pd.isna(r["train_auc"]) else f"{r['train_auc']:.3f}",
                "step": ci(r.get("step", np.nan), r.get("step_low"), r.get("step_high"), "+"),
                "p": p(r.get("step_p", np.nan)),
                "versus": ci(r.get("versus", np.nan), r.get("versus_low"), r.get("versus_high"), "+"),
            }
        )
    return rows


def build_curve_report(
    work: Work, table: pd.DataFrame, setups: dict[str, dict[float, Run]], figure: Path
) -> Path:
    """WORK/curve.html: the learning curves' table, figure, what each last step says and, with several
    setups, how they compare share by share."""
    full = next(iter(setups.values()))[1.0]
    cfg = full.read_config()
    result = full.read_cv_evaluation()
    names = list(setups)
    html = (
        _environment()
        .get_template("curve.html.j2")
        .render(
            **{**_common(full, cfg), "title": "mammofuse learning curve", "model": None, "trained_on": []},
            rows=curve_rows(table),
            verdicts={name: verdict(table[table["preset"] == name]) for name in names},
            versus=versus(table),
            setups=names,
            folds=result.folds,
            repeats=result.repeats,
            breasts=int(table["breasts"].iloc[0]),
            runs=[r.dir.relative_to(work.dir).as_posix() for one in setups.values() for r in one.values()],
            figures=[{"title": "Out-of-fold AUC by training breasts per fold", "src": data_uri(figure)}],
        )
    )
    replace_text(work.curve_report, html)
    return work.curve_report


def _checks(run: Run, absent: list[Path]) -> dict:
    """What `explain` found of the maps: explain/checks.json in sentences (`checks`; none before it ran) and
    the cascading randomisation's figure (`checks_figure`, where it ran; added to `absent` where it ran and
    the figure is gone)."""
    if not run.explain_summary.is_file():
        return {"checks": [], "checks_figure": None}
    summary = read_json(run.explain_summary, f"explain {run.dir}")
    figure = data_uri(run.explain_cascade) if run.explain_cascade.is_file() else None
    if figure is None and summary.get("randomisation", {}).get("cascade"):
        absent.append(run.explain_cascade)
    return {"checks": summary_lines(summary), "checks_figure": figure}


def build_cv_report(run: Run) -> Path:
    """The page of a cross-validation: pooled out-of-fold metrics, folds, figures, the fold ensemble."""
    result = run.read_cv_evaluation()
    cfg = run.read_config()
    members = result.folds * result.repeats
    absent: list[Path] = []
    bundle_text = (
        f"The fold ensemble in {run.bundle.name}/: the {members} fold models, whose probabilities "
        "`mammofuse predict` averages (with their spread per breast); Grad-CAM maps are averaged over them. "
        "The figures above are of the fold models on breasts they never saw."
    )
    if problem := ensemble_problem(run.dir):
        bundle_text = f"None: {problem}. The figures above estimate what tuning and training give."
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
            rule=result.operating_point,
            chosen_on="validation",
            dropped=_dropped(run, Work(cfg.work_dir)),
            **_cohort_pages(run, Work(cfg.work_dir)),
            operating=_operating_rows(
                [(name, m.at_threshold, m.at_threshold_ci, m.calibration) for name, m in models]
            ),
            subgroups=_subgroups(run),
            folds=fold_table(run, result),
            apparent=apparent_text(models),
            apparent_note=APPARENT,
            figures=_figures(run, CV_FIGURES, absent),
            bundle_text=bundle_text,
            tuning=run.read_tuning() if run.tuning.is_file() else None,
            **_checks(run, absent),
            absent=_absent_line(run, absent),
        )
    )
    replace_text(run.report, html)
    return run.report


def build_report(run_dir: Path) -> Path:
    """Write the run's report.html from its files (evaluate first; explain for the gallery)."""
    run = Run(run_dir)
    if run.is_cv:
        return build_cv_report(run)
    evaluation = run.read_evaluation()
    cfg = run.read_config()
    absent: list[Path] = []
    figures = _figures(run, FIGURES, absent)
    gallery = []
    if run.explain_index.is_file():
        for r in pd.read_csv(run.explain_index).itertuples():
            if not (picture := run.explain / str(r.file)).is_file():
                absent.append(picture)
                continue
            caption = f"{r.category.replace('-', ' ')}: row {r.row}, label {r.label}, p = {r.probability:.2f}"
            on = [(v, getattr(r, f"{v.lower()}_on_tumour", None)) for v in ("CC", "MLO")]
            if any(pd.notna(hit) for _, hit in on):  # explain --regions
                said = ", ".join(f"{v} {'yes' if hit else 'no'}" for v, hit in on if pd.notna(hit))
                caption += f"; peak on the marked tumour: {said}"
            gallery.append({"src": data_uri(picture), "caption": caption})
    work = Work(cfg.work_dir)
    models = ((evaluation.model_name, evaluation.model), (BASELINE, evaluation.baseline))
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            **_common(run, cfg),
            cohort=_cohort(run, work),
            **_cohort_pages(run, work),
            operating=_operating_rows(
                [
                    (name, part.test.at_youden, part.test.at_youden_ci, part.test.calibration)
                    for name, part in models
                    if part is not None
                ]
            ),
            subgroups=_subgroups(run),
            metrics=metric_rows(evaluation),
            threshold=evaluation.model.threshold,
            rule=evaluation.operating_point,
            chosen_on="validation",
            test=evaluation.model.test,
            comparison=evaluation.comparison,
            contributions=evaluation.contributions,
            apparent=apparent_text(models),
            apparent_note=APPARENT,
            warnings=evaluation.warnings,
            figures=figures,
            gallery=gallery,
            **_checks(run, absent),
            absent=_absent_line(run, absent),
            scaling=SCALING,
            patches=cfg.model.kind == "patches",
            tile=cfg.model.tile,
        )
    )
    replace_text(run.report, html)
    return run.report


VALIDATION_FIGURES = {
    "roc": "ROC; circles: the bundle's thresholds",
    "calibration": f"Calibration {BINS}",
    "decision": "Decision curve (net benefit; shaded: 95 % bands over patients)",
}


def build_validation_report(
    result: ExternalValidation | OneClassValidation, bundle: Bundle, out: Path, overlays: str | None = None
) -> Path:
    """OUT/validation.html: a bundle on new labelled breasts (`predict --labels`), beside its clinical-only
    model; the figures from OUT/figures/ (none where the breasts are of one class). `overlays`: the page of
    their Grad-CAM figures, relative to OUT (`predict --explain`), linked."""
    cfg = bundle.config
    card = Path(result.bundle) / CARD
    page = {
        "title": f"mammofuse validation: {result.labels}",
        "description": None,  # the training cohort's words; these breasts are others
        "cases": False,  # no case is shown
        "model_card": card.read_text(encoding="utf-8") if card.is_file() else "",
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "labels": cfg.labels,
        "config": to_toml(cfg),
        "versions": versions(),
        "model": cfg.model,
        "architecture": describe(cfg.model),
        "result": result,
        "rule": result.operating_point,
        "chosen_on": result.chosen_on,
        "overlays": overlays,
    }
    if isinstance(result, OneClassValidation):
        rates = [(result.model_name, result.model)]
        rates += [(BASELINE, result.baseline)] if result.baseline is not None else []
        if result.versus is not None:
            rates.append((f"the other bundle ({result.versus_bundle})", result.versus))
        scores = out / "figures" / "scores.png"
        html = (
            _environment()
            .get_template("validation_one_class.html.j2")
            .render(**page, rates=rates, scores=data_uri(scores) if scores.is_file() else None)
        )
    else:
        models = [(result.model_name, result.model)]
        if result.baseline is not None:
            models.append((BASELINE, result.baseline))
        operating = [(name, m.at_youden, m.at_youden_ci, m.calibration) for name, m in models]
        html = (
            _environment()
            .get_template("validation.html.j2")
            .render(
                **page,
                models=models,
                operating=_operating_rows(operating),
                subgroups=result.subgroups,
                subgroups_of="the labelled breasts scored; manufacturer: of the CC image",
                figures=[
                    {"title": title, "src": data_uri(out / "figures" / f"{name}.png")}
                    for name, title in VALIDATION_FIGURES.items()
                    if (out / "figures" / f"{name}.png").is_file()
                ],
            )
        )
    path = out / "validation.html"
    replace_text(path, html)
    return path


def build_overlay_index(
    table: pd.DataFrame,
    bundle: Bundle,
    out: Path,
    named: str,
    marked: str | None = None,
    validation: str | None = None,
) -> Path:
    """OUT/index.html beside `predict --explain`'s overlays (OUT/row{N}.png): every breast drawn, the
    highest probability first, its figure linked (not embedded: hundreds of figures). `table`: predict's
    rows of the breasts drawn, `named` its file's name; `marked`: the regions file whose tumours the
    figures outline; `validation`: the page of the validation on their labels, relative to OUT, linked."""
    cfg = bundle.config
    rows = [
        {
            "row": int(r.row),
            "side": r.side,
            "probability": f"{r.probability:.3f}",
            "called": int(r.label),
            "truth": "" if pd.isna(getattr(r, "truth", np.nan)) else int(r.truth),
            "unlike": r.unlike_training if isinstance(r.unlike_training, str) else "",
            "file": f"row{int(r.row)}.png",
        }
        for r in table.sort_values(["probability", "row"], ascending=[False, True]).itertuples()
    ]
    html = (
        _environment()
        .get_template("overlays.html.j2")
        .render(
            title="mammofuse predict: Grad-CAM of each breast scored",
            description=None,  # the training cohort's words; these breasts are others
            cases=False,  # named by predictions.csv's row, said on the page
            created=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            labels=cfg.labels,
            versions=versions(),
            kind=bundle.info["kind"],
            threshold=bundle.threshold,
            scaling=SCALING,
            marked=marked,
            table=named,
            truth="truth" in table,
            unlike=sum(1 for r in rows if r["unlike"]),
            rows=rows,
            validation=validation,
        )
    )
    path = out / "index.html"
    replace_text(path, html)
    return path
