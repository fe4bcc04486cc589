"""The subcommands' bodies: each reads its arguments, runs one stage, and prints what it did."""

from __future__ import annotations

import argparse
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mammofuse.config import (
    COHORT_SECTIONS,
    Config,
    ConfigError,
    LabelsConfig,
    load_config,
    to_toml,
)
from mammofuse.problems import EXCLUDED, WARNING, DataError, Problems
from mammofuse.storage import check_writable, locked, replace_text, write_table
from mammofuse.ui import console, counted, progress, show_problem_lines, show_problems

if TYPE_CHECKING:
    import pandas as pd

    from mammofuse.deploy.predict import Predicted
    from mammofuse.evaluation.result import (
        CvEvaluation,
        Evaluation,
        ExternalValidation,
        OneClassValidation,
    )
    from mammofuse.explain.checks import Region, RegionKey
    from mammofuse.runs import Run


def cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        cfg = load_config(args.check)
        console.print(f"{args.check}: valid")
        console.out(to_toml(cfg))
    else:
        console.out(to_toml(Config()))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mammofuse.cohort.synth import SynthOptions, synthesize

    opts = SynthOptions(
        breasts=args.breasts,
        seed=args.seed,
        image_size=tuple(args.image_size),
        compression=args.compression,
        signal=args.signal,
        site=args.site,
        years=args.years,
        scanner_change=args.scanner_change,
        extras=args.extras,
        workers=args.workers,
    )
    check_writable(args.out_dir)
    start = time.perf_counter()
    counts = synthesize(args.out_dir, opts, progress=progress("synthesizing"))
    extra = counts["extra images"]
    console.print(
        f"wrote {counted(counts['images'], 'image')} of {counted(counts['breasts'], 'breast')} "
        f"({counted(counts['patients'], 'patient')}, "
        f"{counts['positives']} EIC positive) to {args.out_dir} in {time.perf_counter() - start:.1f} s"
        + (f", {extra} of them raw, synthetic 2D and spot images" if extra else "")
    )
    console.print(f"next: mammofuse ingest {args.out_dir / 'cohort.toml'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from mammofuse.cohort.importers import REGIONS, UNREAD, import_dataset

    check_writable(args.out)
    imported, config = import_dataset(
        args.dataset, args.root, args.out, args.label, progress("reading the ROI mask images")
    )
    labels = imported.labels
    images = "side and view from the headers" if imported.images is None else f"{len(imported.images)} images"
    console.print(
        f"{args.dataset}: {counted(len(labels), 'breast')} of "
        f"{counted(labels['patient_id'].nunique(), 'patient')} "
        f"({int(labels['label'].sum())} {imported.positive}), {images}; wrote {args.out}"
    )
    unlabelled = labels[labels["label"].isna()]
    if len(unlabelled):
        has = "has" if len(unlabelled) == 1 else "have"
        console.print(
            f"[yellow]warning:[/] {counted(len(unlabelled), 'breast')} {has} no label "
            f"({imported.label_rule}; a blank or another value is not read as negative): written without "
            "one, and ingest leaves them out"
        )
    for line in imported.left_out:
        console.print(f"[yellow]warning:[/] {line}")
    if imported.regions is not None:
        images_marked = len(imported.regions.drop_duplicates(["patient_id", "side", "view"]))
        console.print(
            f"{len(imported.regions)} findings marked with boxes on {images_marked} images: "
            f"{args.out / REGIONS} (once a model is trained: mammofuse explain RUN_DIR --regions that file)"
        )
    if imported.unread:
        console.print(
            f"{len(imported.unread)} annotation files could not be read: their findings have no region"
        )
        show_problem_lines(imported.unread, str(args.out / UNREAD))
    console.print(f"next: mammofuse ingest {config}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from mammofuse.cohort.ingest import ingest, write_outputs
    from mammofuse.runs import Work

    cfg = config_from_args(args)
    work = Work(cfg.work_dir)
    check_writable(work.dir)
    problems = Problems(strict=args.strict)
    with locked(work.dir, "ingest"):
        result = ingest(cfg, problems, progress=progress("reading headers"), cluster=args.cluster)
        m = result.manifest
        pos = int(m["label"].sum())
        console.print(
            f"[bold]kept {len(m)} breasts[/] of {m['patient_id'].nunique()} patients: "
            f"{pos} {cfg.labels.positive} (label 1), {len(m) - pos} {cfg.labels.negative} (label 0)"
        )
        if problems.items:
            show_problems(problems, "problems", str(work.exclusions))
        write_outputs(result, cfg, work)
    console.print(f"wrote {work.manifest} and {work.exclusions}")
    return 0


def config_from_args(args: argparse.Namespace) -> Config:
    """The config with the work folder from --work (or --out) when given."""
    cfg = load_config(args.config)
    work = getattr(args, "work", None) or getattr(args, "out", None)
    if work:
        cfg.work_dir = Path(work).resolve()
    return cfg


def cmd_preprocess(args: argparse.Namespace) -> int:
    from mammofuse.imaging.preprocess import preprocess_cohort
    from mammofuse.runs import Work

    cfg = config_from_args(args)
    work = Work(cfg.work_dir)
    work.check_cohort(cfg, ("images", "labels", "clinical"))
    if args.workers is not None:
        cfg.preprocess.workers = args.workers
    if args.cluster:
        cfg.preprocess.cluster = args.cluster  # checked by the command line's parser
    manifest, _ = work.read_manifest()
    check_writable(work.dir, cfg.cache_dir)
    problems = Problems(strict=args.strict)
    start = time.perf_counter()
    with locked(work.dir, "preprocess"):
        table, stats, cache = preprocess_cohort(
            manifest,
            cfg.preprocess,
            cfg.cache_dir,
            problems,
            progress=progress("preprocessing"),
            verify=args.verify,
        )
        write_table(table, work.preprocessed)
        problems.write_csv(work.preprocess_problems)
    console.print(
        f"{stats.images} images: {stats.decoded} decoded ({stats.rebuilt} damaged entries rebuilt), "
        f"{stats.reused} reused from the cache, {stats.failed} failed, in {time.perf_counter() - start:.1f} s"
    )
    if stats.leftovers:
        console.print(f"removed {stats.leftovers} temporary files an interrupted run had left in the cache")
    if enlarged := stats.enlarged_text(cfg.preprocess.output_shape):
        console.print(f"[yellow]{enlarged}[/]")
    console.print(
        f"cache: {cache.dir} ({cfg.preprocess.mode}, {cfg.preprocess.output_shape[0]}x"
        f"{cfg.preprocess.output_shape[1]})"
    )
    if problems.items:
        show_problems(problems, "problems", str(work.preprocess_problems))
    console.print(f"kept {len(table)} of {len(manifest)} breasts; wrote {work.preprocessed}")
    if args.preview:
        from mammofuse.imaging.preview import contact_sheet

        warned = {w.path: w.category for w in reversed(problems.of(WARNING)) if w.path}  # the first of each
        contact_sheet(table, args.preview, warned).savefig(work.preview, dpi=100)
        console.print(f"preview: {work.preview}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from mammofuse.data.splits import breast_dates, make_splits, split_table
    from mammofuse.runs import Work

    cfg = config_from_args(args)
    work = Work(cfg.work_dir)
    work.check_cohort(cfg, ("images", "labels", "clinical"))
    check_writable(work.dir)
    with locked(work.dir, "split"):
        table = work.read_preprocessed()
        splits = make_splits(table, cfg.split)
        write_table(splits, work.splits)
        work.record_cohort(cfg, COHORT_SECTIONS)
    dates = breast_dates(table, cfg.split.dated_by).reset_index(drop=True)
    console.print(split_table(splits, dates).to_string())
    if cfg.split.method == "temporal":
        undated = int(dates.isna().sum())
        console.print(
            f"temporal ({cfg.split.date} dates): the test split is the patients examined last; validation is "
            "drawn at random from the earlier ones"
            + (f"; {undated} breasts without a date are never in the test split" if undated else "")
        )
    console.print(f"wrote {work.splits} (seed {cfg.split.seed}; no patient is in two sets)")
    return 0


def run_config(args: argparse.Namespace, preset: str | None) -> tuple[Config, Path]:
    """The run's config (cohort config + preset + command-line overrides) and its run folder."""
    from mammofuse.presets import apply_preset

    cfg = config_from_args(args)
    if preset:
        cfg = apply_preset(cfg, preset)
    if getattr(args, "epochs", None):
        cfg.train.epochs = args.epochs
    from mammofuse.runs import Work

    name = getattr(args, "run", None) or (Path(preset).stem if preset else "default")
    run_dir = Work(cfg.work_dir).run(name).dir
    check_writable(run_dir.parent, cfg.cache_dir)
    return cfg, run_dir


def cmd_train(args: argparse.Namespace) -> int:
    from mammofuse.models.backbones import check_weights
    from mammofuse.models.fusion import headline
    from mammofuse.runs import Run
    from mammofuse.training.run import fit, start_over, work_splits

    cfg, run_dir = run_config(args, args.preset)
    splits = work_splits(cfg)  # a work folder not split yet stops here, before a run folder is made
    check_weights(cfg.model.backbone, cfg.model.pretrained)  # so do starting weights that cannot be read
    with locked(run_dir, "train"):
        if args.force:
            start_over(Run(run_dir))
        console.print(f"training {headline(cfg.model)} -> {run_dir}")
        best = fit(cfg, Run(run_dir), splits)
    console.print(f"best checkpoint: {best}")
    console.print(f"next: mammofuse evaluate {run_dir}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from mammofuse.presets import apply_preset
    from mammofuse.training.pretrain import PretrainOptions, pretrain

    cfg = config_from_args(args)
    if args.preset:
        cfg = apply_preset(cfg, args.preset)
    out = args.weights.resolve()
    check_writable(out.parent, cfg.cache_dir)
    options = PretrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        crop=tuple(args.crop) if args.crop else None,
    )
    pretrain(cfg, out, options, args.images)
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from mammofuse.runs import Run

    run = Run(_cross_validate(args, args.preset))
    ensemble = f" and the fold ensemble {run.bundle.name}/" if run.bundle.is_dir() else ""
    console.print(f"wrote {run.metrics}, {run.oof.name}{ensemble}")
    console.print(f"next: mammofuse report {run.dir}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from mammofuse.tuning.tune import (
        check_space,
        clinical_val_auc,
        finished_trials,
        read_space,
        run_tune,
        trials_table,
    )

    space = read_space(args.space)  # a bad space stops here, before anything is written
    cfg, run_dir = run_config(args, args.preset)
    check_space(cfg, space, str(args.space or "the default search space"))
    if not args.run:
        run_dir = run_dir.with_name(run_dir.name + "-tune")
    console.print(f"tuning {', '.join(space)} on the validation split -> {run_dir}")
    # several processes may work on one study: each trial holds its own run folder (run_tune)
    study, best = run_tune(cfg, run_dir, args.preset, args.trials, args.storage, space)
    table = trials_table(study)
    console.print(table.to_string(index=False))
    best_trial, n = study.best_trial, finished_trials(study)
    console.print(
        f"best: trial {best_trial.number}, validation AUC {best_trial.value:.3f} (best of {n}: optimistic)"
    )
    if (clinical := clinical_val_auc(study, run_dir)) is not None:
        console.print(
            f"clinical only, on the same validation breasts: AUC {clinical:.3f} (one regression fitted on "
            "the training breasts, nothing chosen on these)"
        )
    console.print(f"wrote {best}")
    console.print(f"next: mammofuse cv {args.config} --preset {best}")
    return 0


def print_cv(result: CvEvaluation) -> None:
    from rich.table import Table

    from mammofuse.evaluation.metrics import rate_text

    cohort = f"{result.breasts} breasts ({result.positives} positive) of {result.patients} patients"
    title = f"out of fold: {cohort}, {result.folds} folds x {result.repeats}"
    table = Table(title=title, title_justify="left")
    for title in (
        "model",
        "pooled AUC [95% CI]",
        "fold AUC mean ± sd",
        "sens",
        "spec",
        "PPV",
        "NPV",
        "Brier",
    ):
        table.add_column(title)
    parts = [(result.model_name, result.model)]
    parts += [("clinical only", result.baseline)] if result.baseline is not None else []
    for name, part in parts:
        at = part.at_threshold
        rates = (at.sensitivity, at.specificity, at.ppv, at.npv)
        table.add_row(name, part.auc.text, part.fold_auc_text, *map(rate_text, rates), f"{part.brier:.3f}")
    console.print(table)
    _print_apparent(parts, "pooled out-of-fold")
    as_scored = [f"{name} {part.auc_as_scored.text}" for name, part in parts if part.auc_as_scored]
    if as_scored:
        console.print(
            "pooled AUC: each fold's scores standardised on its validation breasts (one scale); of the "
            f"probabilities as scored: {'; '.join(as_scored)}"
        )
    _print_footer(
        result, f"sens ... NPV: each breast at its fold's threshold ({result.operating_point.text})"
    )


def _print_rows(title: str, rows: list[dict[str, str]]) -> None:
    """A table of models' figures on one set of breasts (evaluate.split_row's rows)."""
    from rich.table import Table

    columns = {
        "name": "model",
        "auc": "AUC [95% CI]",
        "sensitivity": "sens",
        "specificity": "spec",
        "ppv": "PPV",
        "npv": "NPV",
        "brier": "Brier",
    }
    table = Table(title=title, title_justify="left")
    for heading in columns.values():
        table.add_column(heading)
    for row in rows:
        table.add_row(*(row[k] for k in columns))
    console.print(table)


def _print_apparent(parts: list, held_out: str) -> None:
    """Each model's AUC on its own training breasts and its optimism (result.apparent_text)."""
    from mammofuse.evaluation.result import apparent_text

    if text := apparent_text(parts):
        console.print(
            f"apparent AUC (on its own training breasts, unaugmented): {text}; optimism = apparent - "
            f"{held_out} AUC (large: overfitting)"
        )


def print_evaluation(result: Evaluation) -> None:
    from mammofuse.evaluation.evaluate import metric_rows
    from mammofuse.evaluation.result import BASELINE

    _print_rows("test split", metric_rows(result))
    _print_apparent([(result.model_name, result.model), (BASELINE, result.baseline)], "test")
    if result.contributions:
        parts = "; ".join(f"{name} {auc.auc:.3f}" for name, auc in result.contributions.items())
        console.print(f"what each input contributes (test AUC with it removed): {parts}")
    _print_footer(
        result, f"sensitivity ... NPV at the threshold chosen on validation ({result.operating_point.text})"
    )


def print_validation(result: ExternalValidation) -> None:
    from mammofuse.evaluation.evaluate import split_row
    from mammofuse.evaluation.result import BASELINE

    title = f"{result.labels}: {result.labelled} labelled breasts ({result.model.positives} positive) scored"
    rows = [split_row(result.model_name, result.model)]
    rows += [split_row(BASELINE, result.baseline)] if result.baseline is not None else []
    _print_rows(title, rows)
    cal = result.model.calibration
    if cal is not None:
        console.print(
            f"calibration of {result.model_name}: {cal.text} (intercept 0: right on average; slope 1: as "
            "spread as it should be)"
        )
    if result.internal_auc is not None:
        console.print(f"the bundle's own validation ({result.internal}): AUC {result.internal_auc.text}")
    console.print(f"prevalence: {result.prevalence_text} (PPV, NPV, calibration in the large vary with it)")
    if (v := result.versus) is not None:
        console.print(
            f"versus {v.bundle} ({v.kind}), on the {v.n} breasts both scored ({v.positives} positive): AUC "
            f"{v.auc.text} vs {v.other_auc.text}; difference {v.comparison.text}"
        )
    _print_footer(
        result,
        f"sens ... NPV at the bundle's thresholds, the model's chosen on {result.chosen_on} "
        f"({result.operating_point.text})",
    )
    console.print("(an external validation only where none of these patients was in the training cohort)")


def print_one_class(result: OneClassValidation, labels: LabelsConfig) -> None:
    """The labelled breasts all of one class: the share each model calls right, and what cannot be had."""
    from mammofuse.evaluation.result import BASELINE

    names = {0: labels.negative, 1: labels.positive}
    own, other = names[result.label], names[1 - result.label]
    rates = [(result.model_name, result.model)]
    rates += [(BASELINE, result.baseline)] if result.baseline is not None else []
    rates += [(f"versus {result.versus_bundle}", result.versus)] if result.versus is not None else []
    one = result.labelled == 1
    breasts = (
        "the 1 labelled breast scored is" if one else f"the {result.labelled} labelled breasts scored are all"
    )
    console.print(
        f"{result.labels}: {breasts} {own} (label {result.label}): no AUC, calibration, PPV or NPV (they "
        f"need {other} breasts too); the share called {own} at each model's threshold:"
    )
    for name, rate in rates:
        console.print(f"  {name}: {rate.name} {rate.text} at threshold {rate.threshold:.3f}")
    console.print(
        f"intervals: 95 % bootstrap over patients, never narrower than the exact binomial interval; the "
        f"model's threshold chosen on {result.chosen_on} ({result.operating_point.text})"
    )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def _print_footer(result: Evaluation | CvEvaluation | ExternalValidation, thresholds: str) -> None:
    """What the images add, how the figures were made, and any warning."""
    if result.comparison is not None:
        console.print(f"AUC difference (image + clinical - clinical only): {result.comparison.text}")
    console.print(f"intervals: 95 % bootstrap over patients; {thresholds}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mammofuse.deploy.bundle import write_bundle
    from mammofuse.evaluation.evaluate import evaluate_run
    from mammofuse.runs import Run

    run = Run(args.run_dir.resolve())
    check_writable(run.dir)
    result = evaluate_run(run.dir, args.operating_point)
    print_evaluation(result)
    write_bundle(run.dir)
    console.print(f"wrote {run.metrics}, {run.predictions.name}, {run.figures.name}/ and {run.bundle.name}/")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from mammofuse.explain.checks import read_regions, summary_lines
    from mammofuse.explain.explain import checks_table, explain_run, index_with_hits, write_checks
    from mammofuse.runs import Run

    run = Run(args.run_dir.resolve())
    check_writable(run.dir)
    problems = Problems()
    marked = read_regions(args.regions.resolve(), problems) if args.regions else {}
    if not run.is_cv:
        drawing = Problems()
        index = explain_run(run.dir, args.n, marked, drawing)
        console.print(index.to_string(index=False))
        console.print(f"wrote {counted(len(index), 'overlay')} to {run.explain}")
        show_problems(drawing, "overlays not drawn", str(run.explain))
    table, cascade = checks_table(run, marked, problems, args.cascade, args.cascade_draws)
    if args.regions and not run.is_cv:
        index_with_hits(run, table)  # the drawn cases: does each view's map point at the tumour?
    regions = args.regions.name if args.regions else None
    summary = write_checks(run, table, regions, [p.reason for p in problems.items], marked, cascade)
    for line in summary_lines(summary):
        console.print(line)
    show_problems(problems, "maps or regions left out of the localisation", str(run.explain_summary))
    console.print(f"wrote {run.explain_checks.name} and {run.explain_summary.name} to {run.explain}")
    if run.is_cv:
        console.print(
            "a cross-validation: its maps were checked over every breast, out of fold; for overlays, explain "
            f"a fold (mammofuse explain {run.fold(0, 0).dir})"
        )
    return 0


def _new_breasts(args: argparse.Namespace):
    """Where predict's or recalibrate's breasts are: --images and --clinical or --cohort, and --labels."""
    from mammofuse.deploy import COHORT_LABELS
    from mammofuse.deploy.predict import NewBreasts

    if args.cohort is not None and (args.images or args.clinical):
        raise ConfigError(
            "--cohort says where the images and the clinical CSV are: leave out --images and --clinical"
        )
    if args.cohort is None and args.images is None:
        raise ConfigError(
            "give the new breasts' images (--images DIR_OR_TABLE) or a site's cohort config (--cohort)"
        )
    if args.cohort is None and args.labels is COHORT_LABELS:
        raise ConfigError(
            "--labels without a CSV takes the label CSV of --cohort: give --labels CSV, or --cohort"
        )
    return NewBreasts(args.images, args.clinical, args.labels, args.cohort)


def cmd_predict(args: argparse.Namespace) -> int:
    from mammofuse.deploy.bundle import load_bundle
    from mammofuse.deploy.predict import cache_folder, predict_breasts

    breasts = _new_breasts(args)
    if args.versus is not None and args.labels is None:
        raise ConfigError("--versus compares two bundles on labelled breasts: give --labels too")
    if args.regions is not None and not args.explain:
        raise ConfigError(
            "--regions outlines the tumours on --explain's overlays and checks the maps: give --explain too"
        )
    check_writable(args.out.parent, *([args.cache] if args.cache else []))
    if args.versus is not None:  # read before the first bundle scores: a wrong path stops it at once
        load_bundle(args.versus)

    def score_with(bundle_dir: Path, cache: Path):
        return predict_breasts(
            bundle_dir, breasts, progress=progress, strict=args.strict, workers=args.workers, cache=cache
        )

    # one cache for both bundles (the same preprocessing decodes once), there to the end: --explain reads
    # the inputs back from it
    with cache_folder(args.cache) as cache:
        predicted = score_with(args.bundle, cache)
        versus = (args.versus, score_with(args.versus, cache)) if args.versus is not None else None
        unvalidated = None
        try:
            _show_predicted(args, predicted, versus)
        except DataError as error:  # no label to validate with: the overlays are still drawn, then it stops
            unvalidated = error
        if args.explain:
            _explain_predicted(args, predicted, validated=unvalidated is None)
    if unvalidated is not None:
        raise unvalidated
    return 0


def _write_problems(predicted: Predicted, table: Path) -> str:
    """TABLE_problems.csv beside predict's table of breasts, where there were problems: every file and row
    left out and every warning, with its reason (a file that names no breast has no row in the table).
    Returns what was written, as the terminal says it."""
    problems = table.with_name(f"{table.stem}_problems.csv")
    problems.unlink(missing_ok=True)  # not an earlier run's
    if not predicted.problems.items:
        return str(table)
    predicted.problems.write_csv(problems)
    return f"{table} and {problems.name}"


def _show_problems(predicted: Predicted, written: str) -> None:
    """What kept predict's breasts from being scored, and its warnings first (one may explain many rows
    not scored); all of it in `written`, the table of its breasts."""
    table, problems = predicted.table, predicted.problems
    unscored = table[table["reason"] != ""]
    not_scored = [f"row {r.row} ({r.patient_id} {r.side}): {r.reason}" for r in unscored.itertuples()]
    warned = [p.reason for p in problems.of(WARNING)]
    excluded = problems.of(EXCLUDED)
    loose = [p.reason for p in excluded if not (p.patient_id and p.side)]  # a file of no breast: not a row
    of_breasts = [p.reason for p in excluded if p.patient_id and p.side]
    show_problem_lines(warned + loose + not_scored + of_breasts, str(written))


def _show_predicted(
    args: argparse.Namespace, predicted: Predicted, versus: tuple[Path, Predicted] | None
) -> None:
    """predict's table written and summed up; with --labels, the validation (and --versus) written."""
    from mammofuse.deploy.profile import score_shift

    table, bundle = predicted.table, predicted.bundle
    write_table(table, args.out)
    written = _write_problems(predicted, args.out)
    scored = table["reason"] == ""
    console.print(
        f"scored {int(scored.sum())} of {len(table)} breasts at threshold {bundle.threshold:.3f}; "
        f"wrote {written}"
    )
    unlike = table["unlike_training"] != ""
    if unlike.any():
        console.print(
            f"[yellow]warning:[/] {int(unlike.sum())} of {len(table)} breasts are unlike the data the model "
            "was trained on (column unlike_training): their probabilities may be confidently wrong"
        )
        odd = table[unlike]
        show_problem_lines(
            [f"row {r.row} ({r.patient_id} {r.side}): {r.unlike_training}" for r in odd.itertuples()],
            str(args.out),
        )
    own = "model_probability" if bundle.recalibration is not None else "probability"  # the held-out scale
    shift = score_shift(bundle.profile, table.loc[scored, own].to_numpy()) if bundle.profile else ""
    if shift:
        console.print(f"[yellow]warning:[/] {shift}")
    _show_problems(predicted, written)
    if args.labels is not None:
        from mammofuse.evaluation.external import validate, write_figures, write_one_class_figure
        from mammofuse.evaluation.result import OneClassValidation
        from mammofuse.report.report import build_validation_report

        out = args.out.parent
        if versus is not None:
            write_table(versus[1].table, out / "versus_predictions.csv")
        result = validate(predicted, args.bundle, bundle.config.train.seed, versus)
        replace_text(out / "validation.json", result.to_json())
        overlays = "explain/index.html" if args.explain else None
        if isinstance(result, OneClassValidation):
            labels = bundle.config.labels
            named = labels.positive if result.label == 1 else labels.negative
            write_one_class_figure(result, predicted, named, out / "figures")
            page = build_validation_report(result, bundle, out, overlays)
            print_one_class(result, labels)
            console.print(
                f"wrote {out / 'validation.json'}, {out / 'figures' / 'scores.png'} and the page {page}"
            )
            return
        write_figures(result, table, out / "figures")
        page = build_validation_report(result, bundle, out, overlays)
        print_validation(result)
        console.print(f"wrote {out / 'validation.json'}, {out / 'figures'}/ and the page {page}")


def _explain_predicted(args: argparse.Namespace, predicted: Predicted, validated: bool) -> None:
    """predict --explain: an overlay per scored breast; with --regions the marked tumours outlined on them
    and the maps checked, as `explain` checks a run's (explain/checks.csv, checks.json). `validated`: a
    validation page was written beside (--labels), to link."""
    from mammofuse.explain.checks import read_regions, regions_of, summary_lines
    from mammofuse.explain.explain import PredictedChecks, explain_cases, save_checks
    from mammofuse.report.report import build_overlay_index

    out, bundle, table = args.out.parent / "explain", predicted.bundle, predicted.table
    problems = Problems()
    marked = read_regions(args.regions.resolve(), problems) if args.regions else {}
    regions = {
        int(r.row): regions_of(marked, r.patient_id, r.side)
        for r in table.itertuples()
        if int(r.row) in predicted.inputs
    }
    voi, cfg = bundle.config.preprocess.voi == "window", bundle.config
    checks = PredictedChecks(table, marked, problems, cfg) if args.regions else None
    shown = table[table["row"].isin(predicted.inputs)]
    titles = {int(r.row): _case_title(r) for r in shown.itertuples()}
    drawn = explain_cases(
        bundle.nets, predicted.inputs, voi, out, regions, args.workers, progress, checks, titles
    )
    outlined = args.regions.name if args.regions else None
    validation = "../validation.html" if args.labels is not None and validated else None
    page = build_overlay_index(shown, bundle, out, args.out.name, outlined, validation)
    console.print(
        f"wrote {counted(drawn, 'Grad-CAM overlay')} to {out} ({page.name}: each, highest probability first)"
    )
    if checks is None or not predicted.inputs:
        return
    left_out = [p.reason for p in problems.items]
    summary = save_checks(
        checks.frame(), cfg, args.regions.name, left_out, out / "checks.csv", out / "checks.json"
    )
    for line in summary_lines(summary):
        console.print(line)
    show_problems(problems, "maps or regions left out of the localisation", str(out / "checks.json"))


def _case_title(row: Any) -> str:
    """A predicted breast's figure title: its row, probability, and label where one was given."""
    import pandas as pd

    truth = getattr(row, "truth", None)
    label = "" if truth is None or pd.isna(truth) else f", label {int(truth)}"
    return f"row {int(row.row)}: probability {row.probability:.2f}{label}"


def cmd_recalibrate(args: argparse.Namespace) -> int:
    from mammofuse.config import load_config
    from mammofuse.deploy.predict import cache_folder, predict_breasts
    from mammofuse.deploy.recalibrate import check_folders, recalibrate
    from mammofuse.evaluation.evaluate import split_row
    from mammofuse.evaluation.metrics import SMALL_CLASS
    from mammofuse.evaluation.result import SplitMetrics

    breasts = _new_breasts(args)
    check_folders(args.bundle, args.out)
    check_writable(args.out.parent, *([args.cache] if args.cache else []))
    with cache_folder(args.cache) as cache:
        predicted = predict_breasts(args.bundle, breasts, progress, workers=args.workers, cache=cache)
    site = str(predicted.labels)  # where the breasts come from, in words
    if args.cohort is not None:
        description = load_config(args.cohort).description
        site = f"{args.cohort}: {description}" if description else str(args.cohort)
    table, bundle = predicted.table, predicted.bundle
    breasts_csv = args.out.with_name(f"{args.out.name}-breasts.csv")  # beside the bundle: it names patients
    write_table(table, breasts_csv)
    written = _write_problems(predicted, breasts_csv)
    used = int(((table["reason"] == "") & table["truth"].notna()).sum())
    console.print(f"{used} of {len(table)} breasts scored and labelled: the fit's; wrote {written}")
    _show_problems(predicted, written)
    seed = bundle.config.train.seed
    fitted = recalibrate(predicted, args.bundle, args.out, args.method, site, seed, args.operating_point)
    names = {  # the clinical-only model's too, where the bundle has one
        "shipped": "as shipped",
        "recalibrated": "recalibrated",
        "clinical_shipped": "clinical only, as shipped",
        "clinical_recalibrated": "clinical only, recalibrated",
    }
    check = {k: SplitMetrics.model_validate(fitted.check[k]) for k in names if k in fitted.check}
    title = (
        f"{fitted.breasts} labelled breasts ({fitted.positives} positive): the bundle's probabilities, and "
        f"recalibrated by cross-fitting ({fitted.check['folds']} patient-grouped folds)"
    )
    _print_rows(title, [split_row(names[k], part) for k, part in check.items()])
    for key, part in check.items():
        if part.calibration is not None:
            console.print(f"calibration {names[key]}: {part.calibration.text}")
    if fitted.operating_point is None:
        own = " (the clinical-only model's at its own)" if fitted.clinical is not None else ""
        at = f"at the bundle's threshold {bundle.threshold:.3f}{own}, read as a risk"
    else:
        at = (
            f"recalibrated: each fold called at the threshold its fit chose on the other folds for "
            f"{fitted.operating_point.text}; the new bundle's, chosen on all: {fitted.threshold:.3f}"
        )
    console.print(
        f"sens ... NPV {at}; the AUC is the model's ranking (one map keeps it; the folds' maps move it a "
        "little)"
    )
    console.print(
        f"wrote {args.out}: the bundle with logit(p') = {fitted.intercept:+.3f} + {fitted.slope:.3f} x "
        f"logit(p), fitted on all {fitted.breasts}; validate it on other breasts of this site (predict "
        "--labels)"
    )
    if (clinical := fitted.clinical) is not None:
        cut = (
            "" if clinical.threshold is None else f", its threshold {clinical.threshold:.3f} by the same rule"
        )
        console.print(
            f"and the clinical-only model beside it, refitted alike (logit(p') = {clinical.intercept:+.3f} + "
            f"{clinical.slope:.3f} x logit(p){cut}): a validation compares like with like"
        )
    if fitted.positives < SMALL_CLASS:
        console.print(
            f"[yellow]warning:[/] {fitted.positives} positives: a recalibration on so few events is unsteady "
            + ("(--method intercept fits one number, not two)" if args.method == "logistic" else "")
        )
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from mammofuse.deploy.bundle import load_bundle

    bundle = load_bundle(args.bundle)  # checksums, schemas, weights: a ModelError (exit 2) names the file
    kind, networks = bundle.info["kind"], counted(len(bundle.members), "network")
    console.print(f"{args.bundle}: intact ({kind}, {networks}, threshold {bundle.threshold:.3f})")
    if (fitted := bundle.recalibration) is not None:
        alike = "; its clinical-only model refitted alike" if fitted.clinical is not None else ""
        console.print(f"recalibrated ({fitted.method}) to {fitted.site}, on {fitted.breasts} breasts{alike}")
    return 0


def _bytes_text(n: float) -> str:
    """'512 B', '65.6 MiB', '1.2 TiB'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    step = 0
    while n >= 1024 and step < len(units) - 1:
        n, step = n / 1024, step + 1
    return f"{n:.0f} B" if step == 0 else f"{n:.1f} {units[step]}"


def cmd_cache(args: argparse.Namespace) -> int:
    from mammofuse.imaging.housekeeping import prune, survey, used_entries

    if args.prune and not args.keep:
        raise ConfigError("--prune needs --keep WORK ...: the work folders whose cache entries stay")
    root = args.cache_dir.resolve()
    used = used_entries([w.resolve() for w in args.keep]) if args.keep else None
    if args.prune:
        check_writable(root)
        assert used is not None  # --keep was given
        done = prune(root, used)
        console.print(
            f"removed {done.files} entries ({_bytes_text(done.bytes)}) and {done.folders} settings folders "
            "no kept work folder reads"
        )
    folders = survey(root, used)
    entries, size = sum(f.files for f in folders), sum(f.bytes for f in folders)
    console.print(
        f"{root}: {counted(len(folders), 'settings folder')}, {entries} entries, {_bytes_text(size)}"
    )
    for f in folders:
        share = "" if f.used is None else f" ({f.used} used)"
        console.print(
            f"  {f.path.name}  {f.summary:<22} {f.files} entries{share}  {_bytes_text(f.bytes)}  "
            f"written {f.written:%Y-%m-%d %H:%M} UTC"
        )
    if used is not None and not args.prune:
        spare = [f for f in folders if f.used is not None and f.used < f.files]
        if spare:
            keep = " ".join(map(str, args.keep))
            console.print(
                f"{sum(f.files - (f.used or 0) for f in spare)} entries no kept work folder reads: "
                f"`mammofuse cache {args.cache_dir} --keep {keep} --prune` removes them"
            )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table

    from mammofuse.overview import newest, survey
    from mammofuse.runs import Work

    work = Work(args.work.resolve())
    if not (work.dir / "runs").is_dir():
        raise ConfigError(f"{work.dir}: no runs/ folder: not a work folder, or nothing trained in it yet")
    summaries = survey(work)
    table = Table()
    names = max((len(s.name) for s in summaries), default=3)
    table.add_column("run", no_wrap=True, min_width=names)  # the name to type next, whole
    table.add_column("kind", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    headers = ("AUC [95% CI]", "clinical only", "optimism", "network", "changed (UTC)")
    for header in headers:
        table.add_column(header)
    for s in summaries:
        table.add_row(s.name, s.kind, s.progress, s.auc, s.clinical, s.optimism, s.model, s.changed)
    unbounded = console.options.update_width(10_000)  # console.measure stops at the terminal's width
    if Measurement.get(console, unbounded, table).minimum <= console.width:
        console.print(table)
    else:  # a narrow terminal (80 columns; a log): a line a run, not a table of words cut to "…"
        for s in summaries:
            values = (s.auc, s.clinical, s.optimism, s.model, s.changed)
            shown = "; ".join(f"{h} {v}" for h, v in zip(headers, values, strict=True) if v)
            console.print(f"[bold]{escape(s.name)}[/]: {s.kind}, {escape(s.progress)}; {escape(shown)}")
    for s in summaries:
        if s.problem:
            console.print(f"[yellow]{escape(f'{s.name}: unreadable: {s.problem}')}[/]")
        if s.stale:
            console.print(f"[yellow]warning:[/] {escape(f'{s.name}: {s.stale}')}")
    console.print(
        f"{counted(len(summaries), 'run')} in {work.dir / 'runs'}; AUC: a run's test "
        "split, a cross-validation's (cv) pooled out-of-fold AUC; optimism: the model's AUC on its own "
        "training breasts minus that (large: it overfits); 'cv on 25%': a learning curve's share (mammofuse "
        "curve)"
    )
    for page, made_by in ((work.compare_report, "compare"), (work.curve_report, "curve")):
        if page.is_file():
            console.print(f"{page} (mammofuse {made_by}, {newest(page)} UTC)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mammofuse.report.report import build_report

    check_writable(args.run_dir.resolve())
    path = build_report(args.run_dir.resolve())
    console.print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from mammofuse.evaluation.compare import compare_runs, maps_lines
    from mammofuse.evaluation.cv import fold_epochs
    from mammofuse.evaluation.plots import overfitting_figure
    from mammofuse.explain.checks import read_regions
    from mammofuse.report.report import build_compare_report
    from mammofuse.runs import Run, Work

    _check_setups(args, args.presets)
    regions = args.regions.resolve() if args.regions else None
    if regions is not None:  # before any training, as the setups are
        reading = Problems()
        marked = read_regions(regions, reading)
        show_problems(reading, "rows of the regions file left out", str(regions))
    runs: dict[str, Run] = {}
    for preset in args.presets:
        console.rule(f"preset {preset}")
        runs[preset] = Run(_cross_validate(args, preset))
    work = Work(runs[args.presets[0]].read_config().work_dir)
    table = compare_runs(runs)
    if regions is not None:
        maps = _compare_maps(runs, regions, marked, reading)
        table = table.merge(maps, on="preset", how="left")
    write_table(table, work.compare)
    epochs = {name: fold_epochs(run, run.read_cv_evaluation()) for name, run in runs.items()}
    overfitting_figure(epochs).savefig(work.compare_figure, dpi=110)
    report = build_compare_report(work, table, runs, work.compare_figure)
    console.rule("comparison (identical folds, out of fold)")
    shown = table[[c for c in table.columns if not c.startswith(("tumour_", "attention_"))]].copy()
    for column in shown.columns.drop(["preset", "breasts"]):
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    console.print(shown.to_string(index=False))
    console.print(f"auc_diff: paired against {args.presets[0]}; p_holm: Holm-adjusted over the comparisons")
    if "tumour_peak" in table:
        for line in maps_lines(table):
            console.print(line)
    console.print(f"wrote {work.compare}, {work.compare_figure.name} and {report}")
    return 0


def _check_setups(args: argparse.Namespace, presets: list[str | None]) -> None:
    """Each setup's config made as its cross-validation will make it, and its starting weights read, before
    any of them trains: a preset named wrong, a setting it cannot hold, or ImageNet weights an offline
    machine lacks stop the command at once, not after the setups before it."""
    from mammofuse.models.backbones import check_weights

    if len(set(presets)) < len(presets):
        raise ConfigError("--presets names a setup twice: give each once")
    folders: dict[Path, str | None] = {}
    for preset in presets:
        cfg, run_dir = run_config(args, preset)
        if run_dir in folders:  # two files of one name in different folders: one run folder, refused late
            raise ConfigError(
                f"--presets {folders[run_dir]} and {preset} would both cross-validate into {run_dir.name}-cv "
                "(a run is named after its preset file): give the files different names"
            )
        folders[run_dir] = preset
        check_weights(cfg.model.backbone, cfg.model.pretrained)


def _compare_maps(
    runs: dict[str, Run], regions: Path, marked: dict[RegionKey, list[Region]], reading: Problems
) -> pd.DataFrame:
    """Each setup's maps checked out of fold (written to its explain/ as `explain` writes them) against the
    tumours `marked` in `regions` (`reading`: the rows left out), and how often they point at the tumour on
    the positive breasts, paired against the first setup."""
    from mammofuse.explain.checks import paired_localisation, summary_lines
    from mammofuse.explain.explain import checks_table, write_checks

    tables = {}
    for name, run in runs.items():
        console.rule(f"the maps of {name}")
        problems = Problems()
        tables[name], cascade = checks_table(run, marked, problems)
        left_out = [p.reason for p in reading.items + problems.items]
        summary = write_checks(run, tables[name], regions.name, left_out, marked, cascade)
        for line in summary_lines(summary):  # the rest is on the setup's page; a mismatch is said here
            if line.startswith("warning:"):
                console.print(line)
    return paired_localisation(tables)


def cmd_samplesize(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from mammofuse.evaluation.metrics import FEWEST_FOR_INTERVAL, too_few_for_interval
    from mammofuse.evaluation.samplesize import Anticipated, held_out, sample_size
    from mammofuse.runs import Run

    run = Run(args.run_dir.resolve())
    labels, probabilities, auc, where = held_out(run)
    anticipated = Anticipated.from_held_out(labels, probabilities, args.prevalence, args.auc or auc)
    targets = {"AUC": args.auc_width, "calibration slope": args.slope_width, "O/E": args.oe_width}
    table = sample_size(anticipated, targets, args.breasts or [])
    console.print(
        f"anticipated from {where} of {run.dir} ({len(labels)} breasts, {int(labels.sum())} positive): "
        f"prevalence {anticipated.prevalence:.3f}{'' if args.prevalence is None else ' (given)'}, "
        f"AUC {anticipated.auc:.3f}{'' if args.auc is None else ' (given)'}"
    )
    if too_few_for_interval(labels):  # the logits' spread comes from them, even with --auc and --prevalence
        console.print(
            f"[yellow]warning:[/] fewer than {FEWEST_FOR_INTERVAL} held-out breasts of a class: too few to "
            "anticipate the model's AUC and the spread of its probabilities from, so the figures below are a "
            "guess; anticipate from a cross-validation instead (`mammofuse cv`: every breast held out once)"
        )
    shown = Table("criterion", "95 % CI width", "breasts needed (positive)")
    for b in args.breasts or []:
        shown.add_column(f"width at {b} breasts")
    for row in table.to_dict("records"):
        n = "out of reach" if row["breasts"] is None else f"{row['breasts']:,} ({row['positives']:,})"
        widths = [f"{row[f'width at {b}']:.3f}" for b in args.breasts or []]
        shown.add_row(row["criterion"], f"{row['target_width']:g}", n, *widths)
    console.print(shown)
    reachable = table.dropna(subset=["breasts"])
    if len(reachable) == len(table):
        most = reachable.loc[reachable["breasts"].astype(int).idxmax()]
        console.print(
            f"sample size: {int(most['breasts']):,} labelled breasts ({int(most['positives']):,} positive), "
            f"set by the {most['criterion']} (Riley et al. 2021; breasts like the held-out ones)"
        )
    record = {
        "source": f"{where} of {run.dir}",
        "held_out": {"breasts": len(labels), "positives": int(labels.sum())},
        "prevalence": anticipated.prevalence,
        "auc": anticipated.auc,
        "criteria": json.loads(table.to_json(orient="records")),
    }
    replace_text(run.samplesize, json.dumps(record, indent=2))
    console.print(f"wrote {run.samplesize}")
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    import pandas as pd

    from mammofuse.evaluation.curve import learning_curve, verdict, versus
    from mammofuse.evaluation.plots import curve_figure
    from mammofuse.report.report import build_curve_report, curve_rows
    from mammofuse.runs import Run, Work

    if args.preset and args.presets:
        raise ConfigError("give --preset (one setup's curve) or --presets (several, compared), not both")
    presets = args.presets or [args.preset]
    _check_setups(args, presets)
    shares = sorted({*args.fractions, 1.0})  # the whole training part is the curve's reference
    setups: dict[str, dict[float, Run]] = {}
    for preset in presets:
        runs: dict[float, Run] = {}
        for share in shares:
            console.rule(f"{'' if len(presets) == 1 else f'preset {preset}: '}training share {share:.0%}")
            runs[share] = Run(_cross_validate(args, preset, share, same_steps=args.budget == "steps"))
        setups[runs[1.0].name.removesuffix("-cv")] = runs
    full = next(iter(setups.values()))[1.0]
    work = Work(full.read_config().work_dir)
    table = learning_curve(setups)
    write_table(table, work.curve)
    curve_figure(table, full.read_cv_evaluation().model_name).savefig(work.curve_figure, dpi=110)
    report = build_curve_report(work, table, setups, work.curve_figure)
    console.rule("learning curve (identical folds, out of fold)")
    headers = {
        "preset": "setup",
        "share": "share",
        "train": "training breasts per fold",
        "epochs": "epochs",
        "auc": "AUC [95% CI]",
        "clinical": "clinical only",
        "train_auc": "apparent AUC",
        "step": "step from the share before",
        "p": "p",
        "versus": f"minus {table['preset'].iloc[0]}",
    }
    shown = pd.DataFrame(curve_rows(table)).rename(columns=headers)
    if len(setups) == 1:
        shown = shown.drop(columns=["setup", headers["versus"]])
    console.print(shown.to_string(index=False))
    for name in setups:
        console.print(f"{name + ': ' if len(setups) > 1 else ''}{verdict(table[table['preset'] == name])}.")
    for sentence in versus(table):
        console.print(f"{sentence}.")
    console.print(f"wrote {work.curve}, {work.curve_figure.name} and {report}")
    return 0


def _cross_validate(
    args: argparse.Namespace, preset: str | None, train_fraction: float = 1.0, same_steps: bool = False
) -> Path:
    """Cross-validate one preset as `mammofuse cv` does; its run folder. With `train_fraction` below 1
    (a learning curve's point), each fold's model learns from that share of its training patients, in
    the run folder NAME-cv-train{PCT} (no fold ensemble: `ensemble_problem`); `same_steps`: for epochs /
    share (rounded up), as many optimizer steps as the whole would take."""
    from mammofuse.data.splits import check_fold_count
    from mammofuse.deploy.bundle import ensemble_problem, write_cv_bundle
    from mammofuse.models.backbones import check_weights
    from mammofuse.models.fusion import headline
    from mammofuse.runs import Run, Work
    from mammofuse.training.cv import cv_config, run_cv

    tuning = None
    if getattr(args, "space", None) and not args.tune:
        raise ConfigError("--space is the search space of nested cross-validation: give --tune TRIALS too")
    if getattr(args, "tune", None):
        from mammofuse.tuning.tune import Tuning, check_space, read_space

        tuning = Tuning(args.tune, read_space(args.space))  # a bad space stops here, before any work
    cfg, run_dir = run_config(args, preset)
    if tuning is not None:
        check_space(cfg, tuning.space, str(args.space or "the default search space"))
    cfg = cv_config(cfg, args.folds, args.repeats)
    if not getattr(args, "run", None):
        run_dir = run_dir.with_name(run_dir.name + ("-tuned-cv" if tuning else "-cv"))
    if train_fraction < 1:
        cfg.data.train_fraction = train_fraction
        run_dir = run_dir.with_name(f"{run_dir.name}-train{train_fraction * 100:g}")
        if same_steps:
            cfg.train.epochs = math.ceil(round(cfg.train.epochs / train_fraction, 6))
    k, r = cfg.split.folds, cfg.split.repeats
    check_fold_count(Work(cfg.work_dir).read_preprocessed(), k)  # before the header and the run folder
    check_weights(cfg.model.backbone, cfg.model.pretrained)  # and the starting weights
    if cfg.split.method == "temporal":
        console.print(
            "note: split.method = 'temporal' chooses the test split of `mammofuse split`; cross-validation's "
            "folds are random (each breast held out once, whatever its date)"
        )
    nested = f", each fold tuned by {tuning.trials} trials on its training folds" if tuning else ""
    console.print(f"cross-validating {headline(cfg.model)}: {k} folds x {r}{nested} -> {run_dir}")
    with locked(run_dir, "cv"):
        print_cv(run_cv(cfg, run_dir, tuning, args.operating_point))
        problem = ensemble_problem(run_dir)
        if problem:
            shutil.rmtree(Run(run_dir).bundle, ignore_errors=True)  # not one of other folds' models
            console.print(f"[yellow]no bundle: {problem}[/]")
        else:
            write_cv_bundle(run_dir)
    return run_dir


def cmd_demo(args: argparse.Namespace, run: Callable[[list[str]], int]) -> int:
    """`run` executes one command line (the CLI's main), so the demo shows what each command shows."""
    from mammofuse.demo import run_demo

    size = (args.image_size[0], args.image_size[1])
    check_writable(args.out.resolve())
    return run_demo(args.out.resolve(), run, args.breasts, args.seed, args.epochs, size)
