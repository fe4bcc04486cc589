"""The layout of a work folder and of a run folder, with typed readers and writers for their files.

Every stage finds another stage's output through here, never by a file name of its own:

    WORK/                      `Work`
      cohort.toml              the cohort config the folder was built from (ingest, split)
      manifest.csv, exclusions.csv, ingest.json          ingest
      preprocessed.csv, preprocess_problems.csv, preview.png   preprocess
      splits.csv               split
      compare.csv, compare.png, compare.html   compare
      curve.csv, curve.png, curve.html         curve (its shares: runs/NAME-cv, runs/NAME-cv-train{PCT})
      cache/                   preprocessed arrays (imaging.cache)
      runs/NAME/               `Run`
        config.toml            the run's resolved config (cohort + experiment)
        data.csv               every breast with its split, cache entries and their checksums
        encoder.json           the clinical encoder, fitted on the training split
        stacker.json           late fusion: the regression on the image logit and clinical data (evaluate)
        baseline.json          the clinical-only regression, fitted on the training split (evaluate)
        ingest.json            the feature columns ingest found
        preprocess_problems.csv  breasts the run's preprocessing could not use
        epochs.csv, checkpoints/{best,last,previous}.ckpt       train (best: the kept epoch's weights alone,
                               and their average where train.ema_epochs keeps one)
        hardware.json          how each training session ran (device, precision, input pipeline)
        metrics.json, predictions.csv, figures/                 evaluate
        bundle/                the deployable model (deploy.bundle)
        explain/               Grad-CAM overlays and explain/index.csv; checks.csv, checks.json: can the maps
                               be trusted (randomisation check, localisation on marked tumours); cascade.csv,
                               cascade.png; checks-kept.json: its checks, for a later explain to take up
        report.html            report
        samplesize.json        samplesize (the breasts a validation of the model needs)
      runs/NAME/ of `mammofuse cv`   the same, plus
        folds.csv              the breasts of every fold of every repeat
        folds/r{R}f{K}/        one run per fold (trained, evaluated on its held-out fold)
        oof.csv                out-of-fold predictions; metrics.json then holds a `CvEvaluation`
"""

from __future__ import annotations

import json
import os
import pickle
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import tomli_w
from pydantic import BaseModel, ValidationError

from mammofuse.config import (
    COHORT_RECORD_HEADER,
    COHORT_SECTIONS,
    CohortConfig,
    Config,
    ConfigError,
    load_config,
    save_config,
)
from mammofuse.data.clinical import ClinicalEncoder
from mammofuse.domain import VIEWS
from mammofuse.evaluation.result import CvEvaluation, Evaluation
from mammofuse.imaging.cache import CHECKSUMS
from mammofuse.problems import EXCLUDED, EXCLUSION_COLUMNS, DataError, Problems
from mammofuse.storage import replace_text

if TYPE_CHECKING:
    from mammofuse.models import TwoViewNet

KEY_DTYPES = {"patient_id": str, "side": str}  # patient IDs such as "007" stay text
OOF_COLUMNS = ("patient_id", "side", "label", "repeat", "fold", "probability")  # oof.csv has at least these
M = TypeVar("M", bound=BaseModel)
AVERAGE = "average.module."  # a checkpoint's weights' average (train.ema_epochs), beside the trained "net."


def _require(path: Path, command: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: not found; run `mammofuse {command}` first")
    return path


def read_problems(path: Path) -> pd.DataFrame:
    """An exclusions.csv or preprocess_problems.csv as text ('' for empty cells; no rows when the file
    is absent); files written before warnings were told apart have every row `excluded`."""
    if not path.is_file():
        return pd.DataFrame(columns=list(EXCLUSION_COLUMNS), dtype=str)
    table = pd.read_csv(path, dtype=str).fillna("")
    return table if "severity" in table else table.assign(severity=EXCLUDED)


def _not_as_written(path: Path, command: str, why: str) -> DataError:
    """The error for a file a stage wrote that cannot be read now (damaged, or of another version)."""
    return DataError(f"{path}: not as `mammofuse {command}` writes it ({why}); run it again")


def read_table(path: Path, command: str, columns: tuple[str, ...] = tuple(KEY_DTYPES)) -> pd.DataFrame:
    """A CSV a stage wrote, with patient IDs and sides as text. A file that is not one (cut short by a
    full disk, overwritten, saved by a spreadsheet under another format), or lacks one of the `columns`
    every such file has: a DataError saying to make it again."""
    try:
        table = pd.read_csv(_require(path, command), dtype=KEY_DTYPES)
        missing = [c for c in columns if c not in table]
        problem = f"no column {', '.join(missing)}" if missing else None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).strip()}"
    if problem:
        raise _not_as_written(path, command, problem)
    return table


def read_json(path: Path, command: str) -> Any:
    """A JSON file a stage wrote; one that cannot be read: a DataError saying to make it again."""
    try:
        return json.loads(_require(path, command).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _not_as_written(path, command, f"{type(exc).__name__}: {exc}") from None


def _read_model(model: type[M], path: Path, command: str) -> M:
    """A results file (metrics.json) as its model; one that is not (damaged, or written by a version with
    another schema): a DataError saying to make it again."""
    try:
        return model.model_validate_json(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValidationError) as exc:
        why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise _not_as_written(path, command, why) from None


@dataclass(frozen=True)
class Work:
    """A work folder: what ingest, preprocess and split wrote, and the runs trained on it."""

    dir: Path

    @property
    def cohort_record(self) -> Path:
        return self.dir / "cohort.toml"

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.csv"

    @property
    def exclusions(self) -> Path:
        return self.dir / "exclusions.csv"

    @property
    def ingest_info(self) -> Path:
        return self.dir / "ingest.json"

    @property
    def preprocessed(self) -> Path:
        return self.dir / "preprocessed.csv"

    @property
    def preprocess_problems(self) -> Path:
        return self.dir / "preprocess_problems.csv"

    @property
    def preview(self) -> Path:
        return self.dir / "preview.png"

    @property
    def splits(self) -> Path:
        return self.dir / "splits.csv"

    @property
    def tune_db(self) -> Path:
        """`mammofuse tune`'s default study database."""
        return self.dir / "tune.db"

    @property
    def compare(self) -> Path:
        """`mammofuse compare`: one row per setup, cross-validated on identical folds."""
        return self.dir / "compare.csv"

    @property
    def compare_figure(self) -> Path:
        return self.dir / "compare.png"

    @property
    def compare_report(self) -> Path:
        return self.dir / "compare.html"

    @property
    def curve(self) -> Path:
        """`mammofuse curve`: one row per training share, cross-validated on identical folds."""
        return self.dir / "curve.csv"

    @property
    def curve_figure(self) -> Path:
        return self.dir / "curve.png"

    @property
    def curve_report(self) -> Path:
        return self.dir / "curve.html"

    def run(self, name: str) -> Run:
        return Run(self.dir / "runs" / name)

    def read_manifest(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The manifest and the ingest info (feature columns, counts)."""
        manifest = read_table(self.manifest, "ingest")
        return manifest, read_json(self.ingest_info, "ingest")

    def read_splits(self) -> pd.DataFrame:
        return read_table(self.splits, "split")

    def read_preprocessed(self) -> pd.DataFrame:
        return read_table(self.preprocessed, "preprocess")

    def record_cohort(self, cfg: CohortConfig, sections: tuple[str, ...] = COHORT_SECTIONS) -> None:
        """Write down the cohort sections this folder's files now come from (the others are kept)."""
        record = self._recorded()
        record.update(cfg.record(sections))
        self.dir.mkdir(parents=True, exist_ok=True)
        replace_text(self.cohort_record, f"{COHORT_RECORD_HEADER}\n{tomli_w.dumps(record)}")

    def check_cohort(self, cfg: CohortConfig, sections: tuple[str, ...] = COHORT_SECTIONS) -> None:
        """Refuse a config whose cohort part differs from the one this folder was built from."""
        recorded = _with_defaults(self._recorded())
        now = cfg.record(sections)
        changed = [
            line
            for section in sections
            if section in recorded
            for line in _differences(recorded[section], now[section], section)
        ]
        if changed:
            raise ConfigError(
                f"{self.dir} was built from another cohort config ({self.cohort_record.name}); what differs "
                f"(there -> here): {'; '.join(changed)}. Ingest and split into a new --work folder, or use "
                "the config this folder was built from."
            )

    def _recorded(self) -> dict[str, Any]:
        if not self.cohort_record.is_file():
            return {}
        try:
            return tomllib.loads(self.cohort_record.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise _not_as_written(self.cohort_record, "ingest", str(exc)) from None


def _with_defaults(recorded: dict[str, Any]) -> dict[str, Any]:
    """A cohort record with the settings added since it was written at their defaults, so a work folder
    made by an older mammofuse still matches a config that leaves them unset."""
    sections = {name: recorded[name] for name in COHORT_SECTIONS if name in recorded}
    try:
        filled = CohortConfig.model_validate(sections).model_dump(mode="json", exclude_none=True)
    except ValueError:  # not valid any more: compare as written, every difference shows
        return recorded
    return {**recorded, **{name: filled[name] for name in sections}}


def data_changes(before: pd.DataFrame, now: pd.DataFrame, features: list[str]) -> dict[str, int]:
    """How the breasts a run was trained on (its data.csv) differ from `now`: {what: breasts}, empty when
    they do not. Breasts new or gone, and breasts with another split, label, clinical value or image (by
    checksum: a cohort written again byte for byte, or moved, is the same data); a part either side lacks
    (a manifest has no split) is not compared."""
    key = ["patient_id", "side"]
    parts = {
        "split": ["split"],
        "label": ["label"],
        "clinical value": features,
        "image": list(CHECKSUMS.values()),
    }
    a, b = before.set_index(key), now.set_index(key)
    found = {
        "new breast": len(b.index.difference(a.index)),
        "breast gone": len(a.index.difference(b.index)),
    }
    common = a.index.intersection(b.index)
    for what, cols in parts.items():
        if cols and set(cols) <= set(a.columns) & set(b.columns):
            differs = (a.loc[common, cols].astype(str) != b.loc[common, cols].astype(str)).any(axis=1)
            found[f"with another {what}"] = int(differs.sum())
    return {what: n for what, n in found.items() if n}


def changes_text(changes: dict[str, int]) -> str:
    """`data_changes` in words: "36 new breasts, 1 breast gone, 7 with another split"."""
    words = {what: what.replace("breast", "breasts") if n > 1 else what for what, n in changes.items()}
    return ", ".join(f"{n} {words[what]}" for what, n in changes.items())


def _differences(old: Any, new: Any, key: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for k in sorted(set(old) | set(new))
            for line in _differences(old.get(k), new.get(k), f"{key}.{k}")
        ]
    return [] if old == new else [f"{key}: {old!r} -> {new!r}"]


@dataclass(frozen=True)
class Run:
    """A run folder: one trained model and everything made from it."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def data(self) -> Path:
        return self.dir / "data.csv"

    @property
    def encoder(self) -> Path:
        return self.dir / "encoder.json"

    @property
    def ingest_info(self) -> Path:
        return self.dir / "ingest.json"

    @property
    def preprocess_problems(self) -> Path:
        return self.dir / "preprocess_problems.csv"

    @property
    def hardware(self) -> Path:
        """How each training session ran: device, precision, input pipeline (training.run.setup)."""
        return self.dir / "hardware.json"

    def read_hardware(self) -> list[dict[str, Any]] | None:
        """hardware.json's sessions ([] for a run trained before it was written); None where it cannot be
        read: a log, never a reason to stop training or a report."""
        if not self.hardware.is_file():
            return []
        try:
            sessions = json.loads(self.hardware.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        ok = isinstance(sessions, list) and all(isinstance(s, dict) and "from epoch" in s for s in sessions)
        return sessions if ok else None

    @property
    def epochs(self) -> Path:
        return self.dir / "epochs.csv"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    def checkpoint(self, which: str = "best") -> Path:
        return self.checkpoints / f"{which}.ckpt"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.dir / "predictions.csv"

    @property
    def figures(self) -> Path:
        return self.dir / "figures"

    @property
    def bundle(self) -> Path:
        return self.dir / "bundle"

    @property
    def explain(self) -> Path:
        return self.dir / "explain"

    @property
    def explain_index(self) -> Path:
        return self.explain / "index.csv"

    @property
    def explain_checks(self) -> Path:
        return self.explain / "checks.csv"

    @property
    def explain_summary(self) -> Path:
        return self.explain / "checks.json"

    @property
    def explain_cascade(self) -> Path:
        return self.explain / "cascade.png"

    @property
    def explain_cascade_table(self) -> Path:
        return self.explain / "cascade.csv"

    @property
    def report(self) -> Path:
        return self.dir / "report.html"

    def read_config(self) -> Config:
        return load_config(_require(self.config, "train"))

    def write_config(self, cfg: Config) -> None:
        save_config(cfg, self.config)

    def check_config(self, cfg: Config) -> None:
        """Refuse to continue a run folder that was started with another experiment: its finished parts
        would not be what `cfg` asks for."""
        if not self.config.is_file():
            return
        before = self.read_config().experiment.model_dump(mode="json", exclude_none=True)
        now = cfg.experiment.model_dump(mode="json", exclude_none=True)
        changed = _differences(before, now, "")
        if changed:
            raise ConfigError(
                f"{self.dir} was started with other settings (there -> here): "
                f"{'; '.join(c.removeprefix('.') for c in changed)}. Give this run another --run name, "
                "or delete that folder to start over."
            )

    def read_data(self) -> pd.DataFrame:
        return read_table(self.data, "train")

    def cached_data(self) -> pd.DataFrame:
        """data.csv, every preprocessed image it names in the cache. The breasts whose images the cache lost
        since training (cleaned, pruned, a new disk, the work folder moved) have them made again from their
        DICOM files with the run's settings, and they must come out as training read them (the checksums
        data.csv recorded): where they cannot, a DataError says which and what to do."""
        data = self.read_data()

        def cached(entry: str) -> bool:
            return os.path.isfile(entry) and (Path(entry).parents[1] / "index.json").is_file()

        lost = ~data[[v.column("cache") for v in VIEWS]].map(cached).all(axis=1)
        if not lost.any():
            return data
        from mammofuse.imaging.preprocess import preprocess_cohort
        from mammofuse.ui import console, counted

        again, problems = data[lost], Problems()
        gone = [path for v in VIEWS for path in again[v.column("path")] if not os.path.isfile(path)]
        if gone:
            raise DataError(
                f"{self.dir}: its preprocessed images are gone from the cache, and {len(gone)} of their "
                f"DICOM files too (first: {gone[0]}): restore them, or the cache, to score this run"
            )
        cfg = self.read_config()
        table, stats, cache = preprocess_cohort(again, cfg.preprocess, cfg.cache_dir, problems)
        if failed := [p for p in problems.items if p.severity == EXCLUDED]:
            raise DataError(
                f"{self.dir}: {len(failed)} of its preprocessed images are gone from the cache and cannot be "
                f"made again from their DICOM files (first: {failed[0].reason})"
            )
        keys = ["patient_id", "side"]
        made = again[keys].merge(table, on=keys, how="left").set_index(again.index)
        differ = [v.value for v in VIEWS if not made[CHECKSUMS[v]].astype(int).equals(again[CHECKSUMS[v]])]
        if differ:
            raise DataError(
                f"{self.dir}: its preprocessed images, made again from their DICOM files, differ from those "
                f"it was trained on ({' and '.join(differ)}: checksums): the files or the preprocessing "
                "changed since; `mammofuse train --force` trains it again on them"
            )
        if stats.decoded:  # none: the cache is elsewhere now (the work folder moved), and whole
            console.print(
                f"{counted(stats.decoded, 'preprocessed image')} of {self.dir.name} "
                f"{'was' if stats.decoded == 1 else 'were'} gone from the cache (cleaned "
                f"or pruned since training): made again from their DICOM files into {cache.dir}, as "
                "training read them"
            )
        data = data.copy()
        for v in VIEWS:
            data.loc[lost, v.column("cache")] = made[v.column("cache")]
        return data

    @property
    def stacker(self) -> Path:
        return self.dir / "stacker.json"

    @property
    def baseline(self) -> Path:
        return self.dir / "baseline.json"

    @property
    def made_from_model(self) -> list[Path]:
        """What evaluate, explain, bundle, report and samplesize made from the trained model: it describes
        that model alone, so a run trained over (`train --force`) must not keep it."""
        return [
            self.metrics,
            self.predictions,
            self.stacker,
            self.baseline,
            self.figures,
            self.bundle,
            self.explain,
            self.report,
            self.samplesize,
        ]

    def read_encoder(self) -> ClinicalEncoder:
        try:
            return ClinicalEncoder.load(_require(self.encoder, "train"))
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def read_net(self, which: str = "best") -> TwoViewNet:
        """The trained network of a checkpoint (loaded with weights_only=True), in eval mode: the weights'
        average where training kept one (train.ema_epochs), else the weights as trained."""
        import torch

        from mammofuse.models import load_network

        path = self.checkpoint(which)
        if not path.is_file():
            raise DataError(f"{self.dir}: no checkpoints/{path.name}; train first (mammofuse train)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        except (RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise DataError(
                f"{path}: cannot be loaded as the checkpoint `mammofuse train` wrote ({type(exc).__name__}: "
                "damaged or cut short since?); restore it, or train the run again (`mammofuse train --force`)"
            ) from None
        prefix = AVERAGE if any(k.startswith(AVERAGE) for k in state) else "net."
        net_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        return load_network(
            self.read_config().model, len(self.read_encoder().feature_names), net_state, str(path)
        )

    def read_evaluation(self) -> Evaluation:
        path = self.metrics
        if not path.is_file():
            raise DataError(f"{self.dir}: no metrics.json; run `mammofuse evaluate {self.dir}` first")
        return _read_model(Evaluation, path, f"evaluate {self.dir}")

    def write_evaluation(self, result: Evaluation) -> None:
        replace_text(self.metrics, result.to_json())

    def read_predictions(self) -> pd.DataFrame:
        path = self.predictions
        if not path.is_file():
            raise DataError(f"{self.dir}: no predictions.csv; run `mammofuse evaluate {self.dir}` first")
        command = f"evaluate {self.dir}"
        table = read_table(path, command, ("key", "split", "label", "probability"))
        if not (table["split"] == "test").any():  # evaluate scores every split, the test split always
            raise _not_as_written(path, command, "no test breast in it")
        return table

    @property
    def samplesize(self) -> Path:
        """`mammofuse samplesize`: the breasts a validation of this model needs, and why."""
        return self.dir / "samplesize.json"

    def read_epochs(self) -> pd.DataFrame | None:
        return pd.read_csv(self.epochs) if self.epochs.is_file() else None

    def kept_epoch(self) -> pd.Series | None:
        """The epochs.csv row of the epoch whose weights the run keeps (None before its first epoch)."""
        epochs = self.read_epochs()
        return (
            None
            if epochs is None or epochs.empty
            else kept_epoch(epochs, self.read_config().train.checkpoint)
        )

    # Cross-validation (`mammofuse cv`): every fold is a run of its own under folds/.

    def fold(self, repeat: int, fold: int) -> Run:
        return Run(self.dir / "folds" / f"r{repeat}f{fold}")

    def fold_runs(self) -> list[Run]:
        """The fold runs made so far, by name."""
        return [Run(d) for d in sorted((self.dir / "folds").glob("r*f*")) if d.is_dir()]

    @property
    def folds(self) -> Path:
        """Which breasts are in which fold of which repeat."""
        return self.dir / "folds.csv"

    @property
    def tuning(self) -> Path:
        """Nested cross-validation: how each fold's settings were tuned (trials, search space)."""
        return self.dir / "tuning.json"

    def read_tuning(self) -> dict[str, Any]:
        """Nested cross-validation: {"trials": N, "space": {"section.field": what is drawn}}."""
        return dict(read_json(self.tuning, "cv --tune"))

    def write_tuning(self, tuning: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        replace_text(self.tuning, json.dumps(tuning, indent=2))

    @property
    def study(self) -> Path:
        """Nested cross-validation, in a fold's run: the fold's own study (tune.db, a run per trial)."""
        return self.dir / "tune"

    @property
    def oof(self) -> Path:
        """Out-of-fold predictions: every breast once per repeat."""
        return self.dir / "oof.csv"

    def read_oof(self) -> pd.DataFrame:
        if not self.oof.is_file():
            raise DataError(f"{self.dir}: no oof.csv; run `mammofuse cv` to the end first")
        return read_table(self.oof, "cv", OOF_COLUMNS)

    @property
    def is_cv(self) -> bool:
        return self.folds.is_file()

    def read_cv_evaluation(self) -> CvEvaluation:
        path = self.metrics
        if not path.is_file():
            raise DataError(f"{self.dir}: no metrics.json; run `mammofuse cv` to finish it")
        return _read_model(CvEvaluation, path, "cv")

    def write_cv_evaluation(self, result: CvEvaluation) -> None:
        replace_text(self.metrics, result.to_json())


def kept_epoch(epochs: pd.DataFrame, keep: str) -> pd.Series:
    """The row of the epoch a run keeps (`train.checkpoint`): the best validation AUC's (the first of
    equals, as the checkpoint only moves on an improvement), or the last."""
    return epochs.iloc[-1] if keep == "last" else epochs.loc[epochs["val_auc"].idxmax()]
