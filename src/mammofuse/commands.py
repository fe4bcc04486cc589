"""The subcommands' bodies: each reads its arguments, runs one stage, and prints what it did."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mammofuse.config import Config, load_config, to_toml
from mammofuse.problems import DataError, Problems
from mammofuse.ui import console, problems_table, progress, show_problem_lines


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
        workers=args.workers,
    )
    start = time.perf_counter()
    counts = synthesize(args.out_dir, opts, progress=progress("synthesizing"))
    console.print(
        f"wrote {counts['images']} images of {counts['breasts']} breasts ({counts['patients']} patients, "
        f"{counts['positives']} EIC positive) to {args.out_dir} in {time.perf_counter() - start:.1f} s"
    )
    console.print(f"next: mammofuse ingest {args.out_dir / 'cohort.toml'}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from mammofuse.cohort.ingest import EXCLUSIONS, MANIFEST, ingest, write_outputs

    cfg = config_from_args(args)
    problems = Problems(strict=args.strict)
    result = ingest(cfg, problems, progress=progress("reading headers"))
    write_outputs(result, cfg, cfg.work_dir)
    m = result.manifest
    pos = int(m["label"].sum())
    console.print(
        f"[bold]kept {len(m)} breasts[/] of {m['patient_id'].nunique()} patients: "
        f"{pos} positive (label 1), {len(m) - pos} negative (label 0)"
    )
    if problems.items:
        console.print(problems_table(result.dropped, f"{len(problems.items)} problems"))
        show_problem_lines([p.reason for p in problems.items], str(cfg.work_dir / EXCLUSIONS))
    console.print(f"wrote {cfg.work_dir / MANIFEST} and {cfg.work_dir / EXCLUSIONS}")
    return 0


def config_from_args(args: argparse.Namespace) -> Config:
    """The config with the work folder from --work (or --out) when given."""
    cfg = load_config(args.config)
    work = getattr(args, "work", None) or getattr(args, "out", None)
    if work:
        cfg.work_dir = Path(work).resolve()
    return cfg


def cmd_preprocess(args: argparse.Namespace) -> int:
    from mammofuse.cohort.ingest import read_manifest
    from mammofuse.imaging.preprocess import PREPROCESS_PROBLEMS, PREPROCESSED, preprocess_cohort

    cfg = config_from_args(args)
    if args.workers is not None:
        cfg.preprocess.workers = args.workers
    manifest, _ = read_manifest(cfg.work_dir)
    problems = Problems(strict=args.strict)
    start = time.perf_counter()
    table, stats, cache = preprocess_cohort(
        manifest,
        cfg.preprocess,
        cfg.cache_dir,
        problems,
        progress=progress("preprocessing"),
        verify=args.verify,
    )
    table.to_csv(cfg.work_dir / PREPROCESSED, index=False)
    problems.write_csv(cfg.work_dir / PREPROCESS_PROBLEMS)
    console.print(
        f"{stats.images} images: {stats.decoded} decoded ({stats.rebuilt} damaged entries rebuilt), "
        f"{stats.reused} reused from the cache, {stats.failed} failed, in {time.perf_counter() - start:.1f} s"
    )
    console.print(
        f"cache: {cache.dir} ({cfg.preprocess.mode}, {cfg.preprocess.output_shape[0]}x"
        f"{cfg.preprocess.output_shape[1]})"
    )
    if problems.items:
        console.print(problems_table(problems.counts(), f"{len(problems.items)} problems"))
        show_problem_lines([p.reason for p in problems.items], str(cfg.work_dir / PREPROCESS_PROBLEMS))
    console.print(f"kept {len(table)} of {len(manifest)} breasts; wrote {cfg.work_dir / PREPROCESSED}")
    if args.preview:
        from mammofuse.imaging.preview import contact_sheet

        path = cfg.work_dir / "preview.png"
        contact_sheet(table, args.preview).savefig(path, dpi=100)
        console.print(f"preview: {path}")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    import pandas as pd

    from mammofuse.data.splits import SPLITS, make_splits, split_table
    from mammofuse.imaging.preprocess import PREPROCESSED

    cfg = config_from_args(args)
    source = cfg.work_dir / PREPROCESSED
    if not source.is_file():
        raise DataError(f"{source}: not found; run `mammofuse preprocess` first")
    splits = make_splits(pd.read_csv(source, dtype={"patient_id": str, "side": str}), cfg.split)
    splits.to_csv(cfg.work_dir / SPLITS, index=False)
    console.print(split_table(splits).to_string())
    console.print(f"wrote {cfg.work_dir / SPLITS} (seed {cfg.split.seed}; no patient is in two sets)")
    return 0


def run_config(args: argparse.Namespace, preset: str | None) -> tuple[Config, Path]:
    """The run's config (cohort config + preset + command-line overrides) and its run folder."""
    from mammofuse.presets import apply_preset

    cfg = config_from_args(args)
    if preset:
        cfg = apply_preset(cfg, preset)
    if getattr(args, "epochs", None):
        cfg.train.epochs = args.epochs
    name = getattr(args, "run", None) or (Path(preset).stem if preset else "default")
    return cfg, cfg.work_dir / "runs" / name


def cmd_train(args: argparse.Namespace) -> int:
    from mammofuse.training.run import train

    cfg, run_dir = run_config(args, args.preset)
    console.print(f"training {cfg.model.backbone} ({cfg.model.pretrained}) -> {run_dir}")
    best = train(cfg, run_dir)
    console.print(f"best checkpoint: {best}")
    console.print(f"next: mammofuse evaluate {run_dir}")
    return 0


def print_evaluation(result: dict) -> None:
    from rich.table import Table

    from mammofuse.evaluation.evaluate import metric_rows

    columns = {
        "name": "model",
        "auc": "AUC [95% CI]",
        "sensitivity": "sens",
        "specificity": "spec",
        "ppv": "PPV",
        "npv": "NPV",
        "brier": "Brier",
    }
    table = Table(title="test split", title_justify="left")
    for title in columns.values():
        table.add_column(title)
    for row in metric_rows(result):
        table.add_row(*(row[k] for k in columns))
    console.print(table)
    if "comparison" in result:
        c = result["comparison"]
        console.print(
            f"AUC difference (image + clinical - clinical only): {c['difference']:+.3f} "
            f"[{c['low']:+.3f}, {c['high']:+.3f}], paired bootstrap p = {c['p_value']:.3f}"
        )
    console.print("sensitivity ... NPV at the threshold chosen on validation (Youden)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mammofuse.evaluation.evaluate import evaluate_run

    result = evaluate_run(args.run_dir.resolve())
    print_evaluation(result)
    console.print(f"wrote {args.run_dir / 'metrics.json'}, predictions.csv and figures/")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from mammofuse.explain.explain import EXPLAIN, explain_run

    index = explain_run(args.run_dir.resolve(), args.n)
    console.print(index.to_string(index=False))
    console.print(f"wrote {len(index)} overlays to {args.run_dir / EXPLAIN}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from mammofuse.predict import explain_predictions, predict_breasts

    table, problems, bundle, inputs = predict_breasts(
        args.bundle, args.images, args.clinical, progress=progress("reading headers")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    scored = table["reason"] == ""
    console.print(
        f"scored {int(scored.sum())} of {len(table)} breasts at threshold {bundle.threshold:.3f}; "
        f"wrote {args.out}"
    )
    not_scored = [f"row {r.row} ({r.patient_id} {r.side}): {r.reason}" for r in table[~scored].itertuples()]
    show_problem_lines(not_scored + [p.reason for p in problems.items], str(args.out))
    if args.explain:
        written = explain_predictions(bundle, inputs, args.out.parent / "explain")
        console.print(f"wrote {len(written)} Grad-CAM overlays to {args.out.parent / 'explain'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mammofuse.report.report import build_report

    path = build_report(args.run_dir.resolve())
    console.print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from mammofuse.evaluation.evaluate import auc_text, evaluate_run
    from mammofuse.training.run import train

    rows = []
    baseline = None
    for preset in args.presets:
        cfg, run_dir = run_config(args, preset)
        console.rule(f"preset {preset}")
        train(cfg, run_dir)
        result = evaluate_run(run_dir)
        rows.append(
            {
                "preset": preset,
                "backbone": cfg.model.backbone,
                "val AUC": f"{result['model']['val_auc']:.3f}",
                "test AUC [95% CI]": auc_text(result["model"]["test"]),
            }
        )
        baseline = result.get("baseline", baseline)
    if baseline is not None:
        rows.append(
            {
                "preset": "clinical only",
                "backbone": "logistic regression",
                "val AUC": f"{baseline['val_auc']:.3f}",
                "test AUC [95% CI]": auc_text(baseline["test"]),
            }
        )
    table = pd.DataFrame(rows)
    out = cfg.work_dir / "comparison.csv"
    table.to_csv(out, index=False)
    console.rule("comparison (same split)")
    console.print(table.to_string(index=False))
    console.print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mammofuse.demo import run_demo

    return run_demo(args.out.resolve(), breasts=args.breasts, seed=args.seed)
