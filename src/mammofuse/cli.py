"""The mammofuse command line: one entry point, one subcommand per pipeline stage.

Data and config problems end with a clear message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.markup import escape

from mammofuse import __version__
from mammofuse.config import Config, ConfigError, load_config, to_toml
from mammofuse.models.backbones import ModelError
from mammofuse.problems import DataError, Problems
from mammofuse.ui import console, problems_table, progress, show_problem_lines

EXIT_DATA_ERROR = 2


def _cmd_config(args: argparse.Namespace) -> int:
    if args.check:
        cfg = load_config(args.check)
        console.print(f"{args.check}: valid")
        console.out(to_toml(cfg))
    else:
        console.out(to_toml(Config()))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
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


def _cmd_ingest(args: argparse.Namespace) -> int:
    from mammofuse.cohort.ingest import EXCLUSIONS, MANIFEST, ingest, write_outputs

    cfg = _load(args)
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


def _load(args: argparse.Namespace) -> Config:
    """The config with the work folder from --work (or --out) when given."""
    cfg = load_config(args.config)
    work = getattr(args, "work", None) or getattr(args, "out", None)
    if work:
        cfg.work_dir = Path(work).resolve()
    return cfg


def _cmd_preprocess(args: argparse.Namespace) -> int:
    from mammofuse.cohort.ingest import read_manifest
    from mammofuse.imaging.preprocess import PREPROCESS_PROBLEMS, PREPROCESSED, preprocess_cohort

    cfg = _load(args)
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


def _cmd_split(args: argparse.Namespace) -> int:
    import pandas as pd

    from mammofuse.data.splits import SPLITS, make_splits, split_table
    from mammofuse.imaging.preprocess import PREPROCESSED

    cfg = _load(args)
    source = cfg.work_dir / PREPROCESSED
    if not source.is_file():
        raise DataError(f"{source}: not found; run `mammofuse preprocess` first")
    splits = make_splits(pd.read_csv(source, dtype={"patient_id": str, "side": str}), cfg.split)
    splits.to_csv(cfg.work_dir / SPLITS, index=False)
    console.print(split_table(splits).to_string())
    console.print(f"wrote {cfg.work_dir / SPLITS} (seed {cfg.split.seed}; no patient is in two sets)")
    return 0


def _run_config(args: argparse.Namespace, preset: str | None) -> tuple[Config, Path]:
    """The run's config (cohort config + preset + command-line overrides) and its run folder."""
    from mammofuse.presets import apply_preset

    cfg = _load(args)
    if preset:
        cfg = apply_preset(cfg, preset)
    if getattr(args, "epochs", None):
        cfg.train.epochs = args.epochs
    name = getattr(args, "run", None) or (Path(preset).stem if preset else "default")
    return cfg, cfg.work_dir / "runs" / name


def _cmd_train(args: argparse.Namespace) -> int:
    from mammofuse.training.run import train

    cfg, run_dir = _run_config(args, args.preset)
    console.print(f"training {cfg.model.backbone} ({cfg.model.pretrained}) -> {run_dir}")
    best = train(cfg, run_dir)
    console.print(f"best checkpoint: {best}")
    console.print(f"next: mammofuse evaluate {run_dir}")
    return 0


def _print_evaluation(result: dict) -> None:
    from rich.table import Table

    from mammofuse.evaluation.evaluate import auc_text

    table = Table(title="test split", title_justify="left")
    for col in ("model", "AUC [95% CI]", "sens", "spec", "PPV", "NPV", "Brier"):
        table.add_column(col)
    for name, key in (("image + clinical", "model"), ("clinical only", "baseline")):
        if key in result:
            t = result[key]["test"]
            y = t["at_youden"]
            table.add_row(
                name,
                auc_text(t),
                *(f"{y[k]:.2f}" for k in ("sensitivity", "specificity", "ppv", "npv")),
                f"{t['brier']:.3f}",
            )
    console.print(table)
    if "comparison" in result:
        c = result["comparison"]
        console.print(
            f"AUC difference (image + clinical - clinical only): {c['difference']:+.3f} "
            f"[{c['low']:+.3f}, {c['high']:+.3f}], paired bootstrap p = {c['p_value']:.3f}"
        )
    console.print("sensitivity ... NPV at the threshold chosen on validation (Youden)")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mammofuse.evaluation.evaluate import evaluate_run

    result = evaluate_run(args.run_dir.resolve())
    _print_evaluation(result)
    console.print(f"wrote {args.run_dir / 'metrics.json'}, predictions.csv and figures/")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from mammofuse.explain.explain import EXPLAIN, explain_run

    index = explain_run(args.run_dir.resolve(), args.n)
    console.print(index.to_string(index=False))
    console.print(f"wrote {len(index)} overlays to {args.run_dir / EXPLAIN}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
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


def _cmd_report(args: argparse.Namespace) -> int:
    from mammofuse.report.report import build_report

    path = build_report(args.run_dir.resolve())
    console.print(f"report: {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from mammofuse.evaluation.evaluate import auc_text, evaluate_run
    from mammofuse.training.run import train

    rows = []
    baseline = None
    for preset in args.presets:
        cfg, run_dir = _run_config(args, preset)
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from mammofuse.demo import run_demo

    return run_demo(args.out.resolve(), breasts=args.breasts, seed=args.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammofuse",
        description="Two-view mammography + clinical data -> an honestly validated breast-level model. "
        "Stages: synth -> ingest -> preprocess -> split -> train -> evaluate; `demo` runs them all.",
    )
    parser.add_argument("--version", action="version", version=f"mammofuse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the default config (TOML), or check one")
    p.add_argument("--show", action="store_true", help="print the defaults (the default action)")
    p.add_argument("--check", type=Path, metavar="CONFIG", help="validate CONFIG and print it resolved")
    p.set_defaults(func=_cmd_config)

    p = sub.add_parser("synth", help="write a realistic synthetic cohort (DICOM + CSVs + cohort.toml)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument(
        "--breasts",
        type=_positive_int,
        default=1112,
        help="breasts to generate (default 1112: about 1,001 after NA rows are dropped)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same cohort)")
    p.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        default=[512, 416],
        metavar=("H", "W"),
        help="image height and width in pixels (default 512 416; real mammograms are ~3000 2400)",
    )
    p.add_argument(
        "--compression",
        choices=["none", "rle", "jpeg2000"],
        default="none",
        help="pixel encoding of the DICOM files",
    )
    p.add_argument("--signal", type=float, default=1.0, help="strength of the planted signal (0: none)")
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("ingest", help="read the cohort: manifest.csv + exclusions.csv")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument("--out", type=Path, help="output folder (default: work_dir from the config)")
    p.add_argument("--strict", action="store_true", help="stop at the first data problem (exit code 2)")
    p.set_defaults(func=_cmd_ingest)

    p = sub.add_parser("preprocess", help="decode, orient, crop and resize every image into the cache")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument(
        "--work", type=Path, help="work folder with manifest.csv (default: work_dir from the config)"
    )
    p.add_argument("--workers", type=int, help="processes (default: preprocess.workers; 0 = all cores)")
    p.add_argument(
        "--preview",
        type=int,
        nargs="?",
        const=8,
        default=0,
        metavar="N",
        help="also write WORK/preview.png with N preprocessed pairs (default 8)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="checksum every cached entry (slower; the default checks sizes only)",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first data problem (exit code 2)")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("split", help="patient-grouped, label-stratified splits -> splits.csv")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument("--work", type=Path, help="work folder (default: work_dir from the config)")
    p.set_defaults(func=_cmd_split)

    presets_help = "experiment preset: " + ", ".join(_preset_names()) + ", or a .toml file"
    p = sub.add_parser("train", help="train the two-view + clinical model (resumes an interrupted run)")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument("--preset", help=presets_help)
    p.add_argument("--work", type=Path, help="work folder (default: work_dir from the config)")
    p.add_argument("--run", help="run name (default: the preset's name): WORK/runs/RUN")
    p.add_argument("--epochs", type=_positive_int, help="override train.epochs")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="test metrics with 95%% intervals, beside the clinical-only baseline")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("explain", help="Grad-CAM overlays (CC and MLO) for the test breasts that matter most")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--n",
        type=_positive_int,
        default=3,
        help="breasts per group: highest and lowest scores, false positives, false negatives (default 3)",
    )
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("predict", help="score new breasts with a model bundle (RUN_DIR/bundle)")
    p.add_argument("bundle", type=Path, metavar="BUNDLE")
    p.add_argument(
        "--images",
        type=Path,
        required=True,
        metavar="DIR_OR_TABLE",
        help="a folder of DICOM files, or an image-table CSV (path, patient, side, view)",
    )
    p.add_argument(
        "--clinical", type=Path, required=True, metavar="CSV", help="clinical CSV (same columns as training)"
    )
    p.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="output CSV (default predictions.csv)"
    )
    p.add_argument("--explain", action="store_true", help="also write Grad-CAM overlays next to the output")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("report", help="one self-contained report.html for a run (open it offline)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("compare", help="train and evaluate several presets on the same split; one table")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument("--presets", nargs="+", required=True, help=presets_help)
    p.add_argument("--work", type=Path, help="work folder (default: work_dir from the config)")
    p.add_argument("--epochs", type=_positive_int, help="override train.epochs for every preset")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("demo", help="run the whole pipeline on a generated cohort (CPU, no download)")
    p.add_argument(
        "--out", type=Path, default=Path("mammofuse-demo"), help="output folder (default mammofuse-demo)"
    )
    p.add_argument("--breasts", type=_positive_int, default=1112, help="cohort size (default 1112)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)
    return parser


def _preset_names() -> list[str]:
    from mammofuse.presets import available

    return available()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, found {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, DataError, ModelError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return EXIT_DATA_ERROR
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
