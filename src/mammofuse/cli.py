"""The mammofuse command line: one entry point, one subcommand per pipeline stage.

Data and config problems end with a clear message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

from rich.markup import escape

from mammofuse import __version__, commands
from mammofuse.cohort import DEFAULT_BREASTS, DEFAULT_YEARS
from mammofuse.config import ConfigError
from mammofuse.deploy import COHORT_LABELS
from mammofuse.evaluation.result import OperatingPoint
from mammofuse.explain import CASCADE_BREASTS, CASCADE_DRAWS
from mammofuse.problems import DataError, ModelError
from mammofuse.storage import disk_error
from mammofuse.ui import console

CONFIG_HELP = "the study's cohort config (TOML: where the DICOMs and CSVs are, the work folder)"
RUN_HELP = "a run folder: WORK/runs/NAME"
EXIT_DATA_ERROR = 2


REGIONS_HELP = (
    "the tumours marked on the images, to check whether the maps point at them: columns patient_id, side, "
    "view and either x, y, radius (a circle) or x0, y0, x1, y1 (a box), in the original DICOM image's pixels "
    "(column x, row y), several rows to an image allowed (a synthetic cohort's lesions.csv; `import "
    "cbis-ddsm` and `import vindr-mammo` write regions.csv)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammofuse",
        description="Two-view mammography + clinical data -> an honestly validated breast-level model. "
        "Stages: synth -> ingest -> preprocess -> split -> train -> evaluate -> explain -> report; "
        "predict scores new breasts; `demo` runs everything on a generated cohort.",
    )
    parser.add_argument("--version", action="version", version=f"mammofuse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "config",
        help="print the default config (TOML), or check one",
        description="Print every setting with its default (a starting point for a study's cohort.toml), or "
        "--check a config: each bad key or value is named, then the config is printed resolved.",
    )
    p.add_argument("--show", action="store_true", help="print the defaults (the default action)")
    p.add_argument("--check", type=Path, metavar="CONFIG", help="validate CONFIG and print it resolved")
    p.set_defaults(func=commands.cmd_config)

    p = sub.add_parser(
        "synth",
        help="write a realistic synthetic cohort (DICOM + CSVs + cohort.toml)",
        description="Write a generated cohort as a hospital would export it (MONOCHROME1 and 2, both sides, "
        "markers burned in, missing clinical values): OUT_DIR/dicom/ (CC and MLO per breast), labels.csv, "
        "clinical.csv and cohort.toml. EIC goes with calcification and some clinical variables by a planted "
        "signal (--signal); truth.csv is for tests only. No real patient is in it.",
    )
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the cohort folder to write")
    p.add_argument(
        "--breasts",
        type=_positive_int,
        default=DEFAULT_BREASTS,
        help=f"breasts to generate (default {DEFAULT_BREASTS}: about 1,001 after NA rows are dropped)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same cohort)")
    _image_size(p, (512, 416), "; real mammograms are ~3000 2400")
    p.add_argument(
        "--compression",
        choices=["none", "rle", "jpeg2000"],
        default="none",
        help="pixel encoding of the DICOM files",
    )
    p.add_argument("--signal", type=float, default=1.0, help="strength of the planted signal (0: none)")
    p.add_argument(
        "--site",
        choices=["a", "b"],
        default="a",
        help="'b': another hospital (its own scanner, a brighter tone curve; its own export: other column "
        "names and codes, ';'-separated Windows-1252 CSVs with decimal commas, tumour sizes in cm, Ki-67 "
        "and the invasive fraction as 0-1) with a cohort.toml that reads it; the same --seed gives the same "
        "breasts at either site (default 'a')",
    )
    p.add_argument(
        "--years",
        type=float,
        default=DEFAULT_YEARS,
        help=f"the exams (StudyDate) spread over this many years up to 2025-01-01, in the order of the "
        f"patient numbers, as accession numbers follow the calendar (default {DEFAULT_YEARS:g}; 0: every "
        "exam on 2025-01-01); the images and every other value do not depend on it",
    )
    p.add_argument(
        "--scanner-change",
        type=_exam_day,
        metavar="YYYY-MM-DD",
        help="from this date on, the exams are made on another scanner (site b's: another manufacturer, a "
        "brighter tone curve) and exported as before: a hospital that replaced its mammography unit, for a "
        "temporal split to find (with --years)",
    )
    p.add_argument(
        "--extras",
        type=_share_or_zero,
        default=0.0,
        metavar="SHARE",
        help="share of breasts whose export also holds the unit's other images, as a real export does: the "
        "raw (FOR PROCESSING) image and a synthetic 2D (C-View) of each view, and a spot compression CC; "
        "ingest leaves them out, each with its reason (default 0; the breasts are the same whatever it is)",
    )
    p.add_argument("--workers", type=_workers, default=0, help="processes (0: all cores)")
    p.set_defaults(func=commands.cmd_synth)

    p = sub.add_parser(
        "import",
        help="a public dataset (CBIS-DDSM, CMMD, VinDr-Mammo, RSNA) as a cohort that ingest accepts",
        description="Reads the description files that come with the download (nothing is downloaded) and "
        "writes OUT/images.csv, labels.csv, clinical.csv and cohort.toml. Endpoints: cbis-ddsm malignant; "
        "cmmd malignant or luminal; vindr-mammo birads45 (BI-RADS 4-5 vs 1-3); rsna cancer.",
    )
    p.add_argument(
        "dataset",
        choices=["cbis-ddsm", "cmmd", "vindr-mammo", "rsna"],
        metavar="DATASET",
        help="cbis-ddsm, cmmd, vindr-mammo or rsna",
    )
    p.add_argument("root", type=Path, metavar="ROOT", help="the dataset's folder as downloaded")
    p.add_argument("--out", type=Path, required=True, help="the cohort folder to write")
    p.add_argument("--label", help="the endpoint (default: the dataset's first, see above)")
    p.set_defaults(func=commands.cmd_import)

    p = sub.add_parser(
        "ingest",
        help="read the cohort: manifest.csv + exclusions.csv",
        description="Read every DICOM header and the label and clinical CSVs; pair each breast's CC and MLO; "
        "write WORK/manifest.csv (the breasts kept) and WORK/exclusions.csv (every file, row or breast "
        "left out, with its reason). Pixels are not read here.",
    )
    p.add_argument("config", type=Path, metavar="CONFIG", help=CONFIG_HELP)
    p.add_argument("--out", type=Path, help="output folder (default: work_dir from the config)")
    p.add_argument("--strict", action="store_true", help="stop at the first data problem (exit code 2)")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        type=_cluster_address,
        help="read the headers on a Dask cluster: dask://HOST:PORT or local:N (see preprocess --cluster)",
    )
    p.set_defaults(func=commands.cmd_ingest)

    p = sub.add_parser(
        "preprocess",
        help="decode, orient, crop and resize every image into the cache",
        description="Decode each image of WORK/manifest.csv, apply its header's value transforms "
        "(MONOCHROME1 inverted), face every breast the same way, crop to the breast and resize, into the "
        "cache (one entry per image and setting). Writes WORK/preprocessed.csv and preprocess_problems.csv. "
        "Entries already cached are reused, so an interrupted run resumes where it stopped.",
    )
    _config_and_work(p)
    p.add_argument("--workers", type=_workers, help="processes (default: preprocess.workers; 0 = all cores)")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        type=_cluster_address,
        help="decode on a Dask cluster: dask://HOST:PORT (a running scheduler; its workers need mammofuse "
        "and the same paths to the images and the cache) or local:N (N worker processes started here)",
    )
    p.add_argument(
        "--preview",
        type=int,
        nargs="?",
        const=8,
        default=0,
        metavar="N",
        help="also write WORK/preview.png with N preprocessed pairs (default 8): first the breasts a warning "
        "names (their image oriented by the pixels, read the other way round, ...), then both classes",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="checksum every cached entry and read its display copy (slower; the default checks sizes "
        "only); a damaged one is made again",
    )
    p.add_argument("--strict", action="store_true", help="stop at the first data problem (exit code 2)")
    p.set_defaults(func=commands.cmd_preprocess)

    p = sub.add_parser(
        "split",
        help="patient-grouped, label-stratified splits -> splits.csv",
        description="Assign every breast of WORK/preprocessed.csv to train, val or test "
        "(split.test_fraction, split.val_fraction, split.seed), label-stratified: both breasts of a patient "
        "always land in the same set. Writes WORK/splits.csv.",
    )
    _config_and_work(p)
    p.set_defaults(func=commands.cmd_split)

    presets_help = "experiment preset: " + ", ".join(_preset_names()) + ", or a .toml file"
    p = sub.add_parser(
        "train",
        help="train the two-view + clinical model (resumes an interrupted run)",
        description="Train the preset's model on WORK/splits.csv's training breasts; the clinical encoder is "
        "fitted on them alone, and the epoch kept is the one of the best validation AUC (or the last: "
        "train.checkpoint). Writes WORK/runs/RUN/ "
        "(config.toml, epochs.csv, checkpoints/, hardware.json). Rerun the same command to resume from the "
        "last finished epoch; a run folder started with other settings, or trained on data that changed "
        "since (the cohort or the split made again), is refused.",
    )
    _experiment(p, presets_help, "")
    p.add_argument(
        "--force",
        action="store_true",
        help="start a finished or interrupted run over (its evaluation, bundle and report are removed)",
    )
    p.set_defaults(func=commands.cmd_train)

    p = sub.add_parser(
        "pretrain",
        help="self-supervised pretraining (SimCLR) of the preset's backbone on mammograms, no label read",
        description="Pretrain the backbone the preset names on the work folder's training-split images (or "
        "on every mammogram under --images, an unlabelled archive) by SimCLR, with crops at the working "
        "resolution. Writes FILE (weights + card) and FILE.json (the card); set model.pretrained = FILE to "
        "start training from it. Rerun with the same FILE to resume, or with more --epochs to continue.",
    )
    _config_and_work(p)
    p.add_argument("--preset", help=presets_help + " (names the backbone and the preprocessing)")
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs (default 20)")
    p.add_argument("--images", type=Path, metavar="DIR", help="an unlabelled archive of DICOM files instead")
    p.add_argument(
        "--out", dest="weights", type=Path, required=True, metavar="FILE", help="weights file to write"
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="crops per batch (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 0.001)")
    p.add_argument(
        "--crop",
        type=_positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="crop size (default: the patch model's tile, else half the image)",
    )
    p.set_defaults(func=commands.cmd_pretrain)

    p = sub.add_parser(
        "cv",
        help="repeated patient-grouped k-fold cross-validation: an out-of-fold AUC over every breast",
        description="Train one model per fold (each fold's patients held out) and score every breast once "
        "per repeat while it was held out: the pooled out-of-fold AUC, beside the clinical-only baseline. "
        "Writes WORK/runs/RUN/ (folds.csv, oof.csv, metrics.json, a fold-ensemble bundle/). Finished "
        "folds are kept when an interrupted run is resumed. On a cohort of about 1,000 breasts this is "
        "the estimate to trust over one test split. With --tune, nested: each fold tunes its settings on its "
        "training folds first.",
    )
    _experiment(p, presets_help, "-cv")
    _folds_and_repeats(p)
    p.add_argument(
        "--tune",
        type=_positive_int,
        metavar="TRIALS",
        help="nested cross-validation: before training, each fold tunes its settings with TRIALS Optuna "
        "trials on its training folds alone (as `mammofuse tune` does on one split), so the pooled AUC is an "
        "honest estimate of tuning and training together (default run name: NAME-tuned-cv)",
    )
    p.add_argument("--space", type=Path, help="with --tune: the search space TOML (default: tune's)")
    _operating_point(p)
    p.set_defaults(func=commands.cmd_cv)

    p = sub.add_parser(
        "tune",
        help="Optuna search over experiment settings on validation data (the test split is never used)",
        description="Try settings from the search space (--space) on the training split, each judged by "
        "validation AUC; the study is stored (--storage), so a rerun adds trials until --trials are done, "
        "and a trial that was interrupted goes on from its last checkpoint with its own settings. "
        "Writes the best trial's settings as a preset TOML: cross-validate it (`mammofuse cv`), since the "
        "best of many validation AUCs is optimistic.",
    )
    _experiment(p, presets_help + " (the starting point)", "-tune")
    p.add_argument("--trials", type=_positive_int, default=20, help="trials to finish in all (default 20)")
    p.add_argument(
        "--storage",
        help="SQLAlchemy URL of the study database (default sqlite:///WORK/tune.db); a shared server lets "
        "several machines work on one study",
    )
    p.add_argument("--space", type=Path, help="search space TOML (default: lr, weight decay, dropout, ...)")
    p.set_defaults(func=commands.cmd_tune)

    p = sub.add_parser(
        "evaluate",
        help="test metrics with 95%% intervals, beside the clinical-only baseline",
        description="Score the test split with the best checkpoint and with the clinical-only baseline "
        "(fitted on the training split): AUC, the paired AUC difference, sensitivity ... NPV at the "
        "threshold chosen on validation, and calibration, with 95 % bootstrap intervals over patients. "
        "Writes metrics.json, predictions.csv, figures/ and the deployable bundle/ into RUN_DIR. Run it "
        "again with another --operating-point to choose the thresholds by another rule (nothing is trained).",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=RUN_HELP)
    _operating_point(p)
    p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser(
        "explain",
        help="Grad-CAM overlays (CC and MLO) for the test breasts that matter most",
        description="Grad-CAM of each view's backbone for the test breasts with the highest and lowest "
        "scores, and the false positives and negatives at the validation threshold. Writes RUN_DIR/explain/ "
        "(one PNG per breast, both views side by side) and explain/index.csv. Then, over every test breast, "
        "whether the maps can be trusted: the randomisation check (Adebayo et al. 2018: the maps of the same "
        "network with its weights drawn afresh should look different; on --cascade breasts also in its "
        "cascading form, the weights redrawn from the top down: which learnt layers the maps rest on) and, "
        "with --regions, whether the maps point at the marked tumours (the pointing game, and the share of "
        "each map's mass on the tumour, against chance and the breast's brightest spot): explain/checks.csv "
        "and explain/checks.json.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=RUN_HELP)
    p.add_argument(
        "--n",
        type=_positive_int,
        default=3,
        help="breasts per group: highest and lowest scores, false positives, false negatives (default 3)",
    )
    p.add_argument("--regions", type=Path, metavar="CSV", help=REGIONS_HELP)
    p.add_argument(
        "--cascade",
        type=_non_negative_int,
        default=CASCADE_BREASTS,
        metavar="N",
        help="held-out breasts (a cross-validation shares them out among its fold models), drawn with the "
        "run's seed, whose maps are made again at each stage of the cascading randomisation (per draw, one "
        "Grad-CAM pass each per block of the backbone, and one "
        f"for the head); 0 leaves it out (default {CASCADE_BREASTS})",
    )
    p.add_argument(
        "--cascade-draws",
        type=_positive_int,
        default=CASCADE_DRAWS,
        metavar="K",
        help="draws of the random weights the cascade goes through, each a pass of its own: one draw's "
        f"verdict can be luck, and the range of the draws' medians shows how much (default {CASCADE_DRAWS})",
    )
    p.set_defaults(func=commands.cmd_explain)

    p = sub.add_parser(
        "predict",
        help="score new breasts with a model bundle (RUN_DIR/bundle)",
        description="Preprocess new DICOM files as in training and score each breast with both views: a "
        "probability and the label at the bundle's threshold, one row per breast in --out. A breast that "
        "cannot be scored gets a row with its reason; one unlike the training data is flagged "
        "(unlike_training). With --labels: an external (or temporal) validation of the bundle on them.",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a model bundle folder (RUN_DIR/bundle)")
    _new_breasts(
        p,
        ": also validate the model on them, beside the clinical-only model that travels with the bundle (AUC "
        "with 95%% CI, calibration, sens ... NPV at the bundle's threshold; nothing is fitted on them) -> "
        "validation.json, figures/ and validation.html next to --out (breasts all of one class: the share "
        "each model calls right, its specificity or sensitivity)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="output CSV (default predictions.csv)"
    )
    p.add_argument(
        "--versus",
        type=Path,
        metavar="BUNDLE",
        help="with --labels: also score this other bundle on the same breasts and compare the two, paired "
        "(AUC difference with its interval and p) -> versus_predictions.csv and validation.json's 'versus'",
    )
    p.add_argument("--explain", action="store_true", help="also write Grad-CAM overlays next to the output")
    p.add_argument(
        "--regions",
        type=Path,
        metavar="CSV",
        help="with --explain: outline these tumours on the overlays and check the maps against them (at "
        "another hospital: do they still point at the tumour?) -> explain/checks.csv, checks.json. "
        + REGIONS_HELP,
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="leave unscored the breasts unlike the training data (else flagged)",
    )
    p.set_defaults(func=commands.cmd_predict)

    p = sub.add_parser(
        "recalibrate",
        help="fit a bundle's probabilities to a site's labelled breasts (a new bundle)",
        description="A model that ranks well at a new site can still be miscalibrated there: its "
        "probabilities are not that site's risks, and its threshold calls another share of breasts "
        "positive. recalibrate scores the site's labelled breasts as predict does, refits the map from the "
        "bundle's probability to the site's (logit(p') = a + b logit(p), or a alone), checks it by "
        "cross-fitting (each breast recalibrated by a fit on the other patients' breasts) and writes a copy "
        "of the bundle with it (recalibration.json) to --out, and the breasts it scored (predict's table: "
        "each one's probability, label, and why one was not scored) to OUT-breasts.csv beside it. The "
        "clinical-only model that travels with the bundle is refitted and checked alike, so that a "
        "validation compares like with like. The networks, features and threshold stay the bundle's. "
        "Validate the new bundle on other breasts of the site than these (predict --labels).",
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE", help="a model bundle folder (RUN_DIR/bundle)")
    _new_breasts(p, ": the breasts the recalibration is fitted on (required)", labels_required=True)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the recalibrated bundle to write")
    p.add_argument(
        "--method",
        choices=["logistic", "intercept"],
        default="logistic",
        help="'logistic' (default): intercept and slope; 'intercept': the intercept alone (calibration in "
        "the large), steadier with few events",
    )
    p.add_argument(
        "--operating-point",
        type=_operating_rule,
        metavar="RULE",
        help="choose the site's own threshold on its recalibrated probabilities: sensitivity:T, "
        "specificity:T or youden (checked by cross-fitting as the map is: each fold's threshold chosen on "
        "the other folds); default: keep the bundle's threshold, read as a risk at the site",
    )
    p.set_defaults(func=commands.cmd_recalibrate)

    p = sub.add_parser(
        "bundle",
        help="work with a model bundle: `bundle verify DIR` checks every file",
        description="A bundle (RUN_DIR/bundle, written by evaluate and cv) holds the weights, the config, "
        "the clinical encoder, the threshold, a model card and a manifest of SHA-256 sums.",
    )
    action = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    v = action.add_parser("verify", help="check every file of a bundle against its SHA-256 and schema")
    v.add_argument("bundle", type=Path, metavar="DIR", help="a model bundle folder (RUN_DIR/bundle)")
    v.set_defaults(func=commands.cmd_bundle_verify, usage_of=v)

    p = sub.add_parser(
        "cache",
        help="what a cache of preprocessed images holds; --prune removes what no work folder uses",
        description="List each settings folder of a preprocessing cache (WORK/cache, or "
        "preprocess.cache_dir): its settings, entries, size and when it was last written; with --keep, how "
        "many of its entries the named work folders read (their preprocessed.csv and every run's data.csv, "
        "folds and tune trials included). Every preprocessing setting tried keeps a whole copy of the "
        "cohort; --prune removes every entry none of the kept work folders reads, and settings folders left "
        "empty. Run it while nothing else trains from this cache: a run of a work folder not named loses its "
        "images.",
    )
    p.add_argument("cache_dir", type=Path, metavar="CACHE_DIR", help="the cache folder")
    p.add_argument(
        "--keep",
        type=Path,
        nargs="+",
        metavar="WORK",
        help="work folders whose entries stay (and are counted)",
    )
    p.add_argument(
        "--prune", action="store_true", help="remove every entry the --keep work folders do not read"
    )
    p.set_defaults(func=commands.cmd_cache)

    p = sub.add_parser(
        "runs",
        help="every run of a work folder: what it is, how far it got, what it measured",
        description="One row per run folder of WORK/runs: its kind (run, cross-validation, nested, a "
        "learning curve's share, tuning study), progress (epochs or folds finished), the headline AUC with "
        "its interval beside the clinical-only model's, the optimism (apparent minus held-out AUC: how far "
        "it overfits), network, and when it last changed; a warning for a run trained on breasts whose split "
        "or label the work folder has changed since (its figures are of the data before). Reads the runs' "
        "files; trains and writes nothing.",
    )
    p.add_argument("work", type=Path, metavar="WORK", help="the work folder")
    p.set_defaults(func=commands.cmd_runs)

    p = sub.add_parser(
        "report",
        help="one self-contained report.html for a run (open it offline)",
        description="Write RUN_DIR/report.html from the run's evaluation: flow of breasts, metrics with "
        "intervals beside the clinical-only baseline, curves, calibration, subgroups, training curves and "
        "Grad-CAM overlays, all inside one file. Run evaluate (and explain) first.",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=RUN_HELP)
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser(
        "compare",
        help="cross-validate several presets on identical folds; paired differences against the first",
        description="Run `mammofuse cv` for each preset on the same folds, then compare each with the first "
        "on the same breasts: paired AUC differences with intervals and Holm-adjusted p-values. Writes "
        "WORK/compare.csv, compare.png (training vs validation curves) and compare.html.",
    )
    _config_and_work(p)
    p.add_argument("--presets", nargs="+", required=True, help=presets_help + " (the first is the reference)")
    _folds_and_repeats(p)
    p.add_argument("--epochs", type=_positive_int, help="override train.epochs for every preset")
    _operating_point(p)
    p.add_argument(
        "--regions",
        type=Path,
        metavar="CSV",
        help="also check each setup's Grad-CAM maps over every breast, out of fold (as `explain` does), and "
        "compare, paired, how often they point at the tumour on the positive breasts (each view apart too; "
        "for patch models, the tile attention as well). " + REGIONS_HELP,
    )
    p.set_defaults(func=commands.cmd_compare)

    p = sub.add_parser(
        "samplesize",
        help="how many labelled breasts a validation of this model needs (Riley et al. 2021)",
        description="The breasts an external validation (or a test split) needs for 95 % intervals of a "
        "target width: of the AUC (Newcombe's standard error), the calibration slope and the observed / "
        "expected ratio, from the prevalence and the model's logits on breasts like its held-out ones (a "
        "run's test split, a cross-validation's out-of-fold predictions), shifted to --prevalence where "
        "given. The largest is the sample size; --breasts N gives the widths N breasts would reach. Writes "
        "RUN_DIR/samplesize.json.",
    )
    p.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="an evaluated run, or a finished cross-validation"
    )
    p.add_argument("--prevalence", type=_open_share, help="the share of positives expected at the site")
    p.add_argument("--auc", type=_open_share, help="the AUC expected there (default: the held-out AUC)")
    for flag, what, default in (
        ("--auc-width", "the AUC", 0.1),
        ("--slope-width", "the calibration slope", 0.2),
        ("--oe-width", "the O/E ratio", 0.2),
    ):  # samplesize.TARGETS
        p.add_argument(
            flag, type=_positive_float, default=default, help=f"target width of {what}'s interval ({default})"
        )
    p.add_argument(
        "--breasts",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="the widths this many breasts would give",
    )
    p.set_defaults(func=commands.cmd_samplesize)

    p = sub.add_parser(
        "curve",
        help="a learning curve: cross-validate on shares of the training data; would more breasts help?",
        description="Run `mammofuse cv` once per training share on the same folds, each fold's model "
        "learning from that share of its training patients (whole patients, label mix kept, nested; "
        "validation and the held-out fold whole), and the whole training part as the reference (the plain "
        "cv run, reused where it is finished). Every share is scored on the same breasts: the AUC with its "
        "interval per share, the clinical-only regression beside it, and the paired difference between "
        "neighbouring shares, whose last step says whether the curve still rises. With --presets, several "
        "setups' curves, each compared with the first at every share, and how that difference changes with "
        "the training size. Writes WORK/curve.csv, curve.png and curve.html; each share's cross-validation "
        "stays in WORK/runs/NAME-cv-train{PCT}.",
    )
    _config_and_work(p)
    p.add_argument("--preset", help=presets_help)
    p.add_argument(
        "--presets",
        nargs="+",
        help="several setups' curves on the same folds and breasts instead of one, each later one compared "
        "with the first at every share (does it matter more with fewer breasts?)",
    )
    p.add_argument(
        "--fractions",
        type=_share,
        nargs="+",
        default=[0.25, 0.5, 0.75],
        metavar="SHARE",
        help="training shares below 1 (default: 0.25 0.5 0.75; 1 is always added)",
    )
    p.add_argument(
        "--budget",
        choices=["steps", "epochs"],
        default="steps",
        help="steps (default): each share trains for as many optimizer steps as the whole training part "
        "(train.epochs / share, rounded up), so that a smaller share is not also a shorter training; "
        "epochs: train.epochs for every share",
    )
    _folds_and_repeats(p)
    p.add_argument("--epochs", type=_positive_int, help="override train.epochs (of the whole training part)")
    _operating_point(p)
    p.set_defaults(func=commands.cmd_curve)

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a generated cohort (CPU, no download)",
        description="synth -> ingest -> preprocess -> split -> train (preset demo_cpu) -> evaluate -> "
        "explain -> report into --out, each step as its own command runs it. 2 to 3 minutes on 2 CPU "
        "cores; rerun the same command to resume (the cache and finished epochs are kept).",
    )
    p.add_argument(
        "--out", type=Path, default=Path("mammofuse-demo"), help="output folder (default mammofuse-demo)"
    )
    p.add_argument(
        "--breasts",
        type=_positive_int,
        default=DEFAULT_BREASTS,
        help=f"cohort size (default {DEFAULT_BREASTS})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated cohort (default 0)")
    p.add_argument("--epochs", type=_positive_int, help="override the demo_cpu preset's epochs (default 15)")
    _image_size(p, (256, 208))
    p.set_defaults(func=lambda args: commands.cmd_demo(args, run=main))
    for command in sub.choices.values():
        command.set_defaults(usage_of=command)  # `bundle verify` names its own
    return parser


def _config_and_work(p: argparse.ArgumentParser) -> None:
    """The arguments every stage after ingest shares: the study's config and its work folder."""
    p.add_argument("config", type=Path, metavar="CONFIG", help=CONFIG_HELP)
    p.add_argument("--work", type=Path, help="work folder (default: work_dir from the config)")


def _experiment(p: argparse.ArgumentParser, presets_help: str, suffix: str) -> None:
    """CONFIG, --work, and what makes a run: --preset, --run (its folder's name), --epochs."""
    _config_and_work(p)
    p.add_argument("--preset", help=presets_help)
    default = "the preset's name" + (f" + '{suffix}'" if suffix else "")
    p.add_argument("--run", help=f"run name (default: {default}): WORK/runs/RUN")
    p.add_argument("--epochs", type=_positive_int, help="override train.epochs")


def _folds_and_repeats(p: argparse.ArgumentParser) -> None:
    p.add_argument("--folds", type=_at_least_two, help="folds K (default: split.folds, else 5)")
    p.add_argument(
        "--repeats", type=_positive_int, help="repeats R with new seeds (default: split.repeats, 1)"
    )


def _operating_point(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--operating-point",
        type=_operating_rule,
        default=OperatingPoint(),
        metavar="RULE",
        help="how the decision threshold is chosen on the validation breasts, for the model and the "
        "clinical-only baseline alike: youden (the default: sensitivity + specificity - 1 at its largest), "
        "sensitivity:T (the highest threshold that finds a share T of the positives, e.g. sensitivity:0.9) "
        "or specificity:T; the held-out figures show whether the target holds on breasts that did not "
        "choose it. Finished runs and folds are evaluated again, not trained",
    )


def _image_size(p: argparse.ArgumentParser, default: tuple[int, int], note: str = "") -> None:
    """--image-size H W of a generated cohort."""
    help_text = f"generated image height and width in pixels (default {default[0]} {default[1]}{note})"
    p.add_argument(
        "--image-size", type=_positive_int, nargs=2, default=list(default), metavar=("H", "W"), help=help_text
    )


def _new_breasts(p: argparse.ArgumentParser, labels_use: str, labels_required: bool = False) -> None:
    """Where new breasts are (predict, recalibrate): --images and --clinical, or --cohort; their labels
    (`labels_use`: what they are for)."""
    p.add_argument(
        "--images",
        type=Path,
        metavar="DIR_OR_TABLE",
        help="a folder of DICOM files, or an image-table CSV (path, patient, side, view); read with the "
        "bundle's own rules (its [images] settings)",
    )
    p.add_argument(
        "--clinical",
        type=Path,
        metavar="CSV",
        help="clinical CSV or Excel workbook (.xlsx; same columns as training; not needed for an image-only "
        "model)",
    )
    p.add_argument(
        "--cohort",
        type=Path,
        metavar="CONFIG",
        help="instead of --images and --clinical: another site's cohort config, whose [images], [labels] and "
        "[clinical] say where its files are and how its export writes them (side and view patterns, column "
        "names, clinical.rename and clinical.recode, labels.scale); the model's features, endpoint and "
        "preprocessing stay the bundle's",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=0,
        help="processes that decode the images and draw predict --explain's overlays (0, the default: every "
        "core)",
    )
    p.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help="keep the preprocessed images in DIR: a rerun, or another bundle with the same preprocessing, "
        "decodes nothing again (default: a temporary folder, removed)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        nargs="?",
        const=COHORT_LABELS,
        required=labels_required,
        metavar="CSV",
        help="label CSV or Excel workbook (.xlsx) of these breasts (same columns as training; with --cohort, "
        f"--labels alone takes the site's own){labels_use}",
    )


def _preset_names() -> list[str]:
    from mammofuse.presets import available

    return available()


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2, found {value}")
    return value


def _operating_rule(text: str) -> OperatingPoint:
    try:
        return OperatingPoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _exam_day(text: str) -> str:
    """YYYY-MM-DD as a StudyDate (YYYYMMDD)."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").strftime("%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date as YYYY-MM-DD") from None


def _cluster_address(text: str) -> str:
    if not re.fullmatch(r"dask://\S+|local:\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected dask://HOST:PORT or local:N")
    return text


def _workers(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (every core) or a number of processes, found {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, found {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, found {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a share of the training data in (0, 1], found {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, found {text}")
    return value


def _share_or_zero(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, found {text}")
    return value


def _open_share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, found {text}")
    return value


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; an argument the command does not take is refused by that command's
    parser, so that the message shows its usage (argparse alone shows the top level's)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "usage_of", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return int(args.func(args))
    except (ConfigError, DataError, ModelError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}")
        return EXIT_DATA_ERROR
    except OSError as exc:
        line = disk_error(exc)
        if line is None:
            raise
        console.print(f"[bold red]error:[/] {escape(line)}")
        return EXIT_DATA_ERROR
    except KeyboardInterrupt:
        console.print("interrupted; rerun the same command to resume (what was finished is kept)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
