"""A model bundle: everything `predict` needs, in one directory, loadable without the training run.

Made from a run by `write_bundle` (the `evaluate` command does it after evaluation), or from a
cross-validation by `write_cv_bundle` (the fold ensemble, `mammofuse cv` does it):

    model.safetensors  the network's weights (safetensors: tensors only, no pickle to run)
    encoder.json       the clinical encoder fitted on the training split
    baseline.json      the clinical-only regression of the same training split (when the model uses
                       clinical data): `predict --labels` scores a new labelled cohort with both
    members/NAME/      a fold ensemble instead: model.safetensors + encoder.json of every fold model
    recalibration.json a site's recalibration of the bundle's probability (`mammofuse recalibrate`): a
                       copy of the bundle with this file added
    config.toml        the run's resolved config (model, preprocessing, ingestion rules)
    bundle.json        format, library versions, threshold (chosen on validation), metrics, members
    model_card.md      what the model is for, how it was validated, its limits
    SHA256SUMS         the SHA-256 of every file above (`sha256sum -c SHA256SUMS` checks it too)

Every file is checked against SHA256SUMS and its schema before a bundle is used: a damaged or edited
bundle is refused with the file named, never scored with (`mammofuse bundle verify DIR` checks alone).

A bundle scores a breast with every member and averages their probabilities (the spread says how
much the members disagree); its threshold is the mean of the members' validation-chosen thresholds.
The clinical-only baseline of a fold ensemble is the same: its members' regressions, averaged.
[MONAI bundle metadata.json carries the same contract.]
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pydicom
import safetensors.torch
import torch
import torchvision
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mammofuse import __version__
from mammofuse.config import Config, load_config, save_config
from mammofuse.data.clinical import ClinicalEncoder
from mammofuse.deploy.profile import Profile, training_profile
from mammofuse.evaluation.result import BASELINE as CLINICAL_ONLY
from mammofuse.evaluation.result import (
    ModelMetrics,
    OperatingPoint,
    PooledMetrics,
    apparent_text,
)
from mammofuse.evaluation.samplesize import needed_text
from mammofuse.models import ModelError, TwoViewNet, describe, load_network
from mammofuse.models.stacking import ClinicalBaseline, Recalibration, Stacker
from mammofuse.runs import Run
from mammofuse.storage import replace_text

BUNDLE_FORMAT = 2  # 2: safetensors weights, SHA256SUMS, members for fold ensembles
WEIGHTS, ENCODER, STACKER, BASELINE, CONFIG, INFO, CARD, SUMS = (
    "model.safetensors",
    "encoder.json",
    "stacker.json",
    "baseline.json",
    "config.toml",
    "bundle.json",
    "model_card.md",
    "SHA256SUMS",
)
RECALIBRATION = "recalibration.json"


class BundleInfo(BaseModel):
    """bundle.json: nothing more, nothing less."""

    model_config = ConfigDict(extra="forbid")

    format: int
    created: str
    versions: dict[str, str]
    backbone: str
    preprocess: dict[str, Any]
    kind: Literal["single model", "fold ensemble"]
    threshold: float = Field(ge=0, le=1)
    operating_point: OperatingPoint = OperatingPoint()  # the rule that chose it on validation
    n_clinical: int | None = None
    test_auc: dict[str, Any] | None = None
    baseline_test_auc: dict[str, Any] | None = None
    members: dict[str, float] | None = None  # fold ensemble: member folder -> its validation threshold
    profile: Profile | None = None  # what the model was trained on (predict flags inputs outside it)
    cv_auc: dict[str, Any] | None = None
    baseline_cv_auc: dict[str, Any] | None = None


def versions() -> dict[str, str]:
    return {
        "mammofuse": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pydicom": pydicom.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Member:
    """One trained network with the clinical encoder of its training data."""

    net: TwoViewNet
    encoder: ClinicalEncoder
    stacker: Stacker | None = None  # late fusion: the regression on the net's logit and the clinical data
    baseline: ClinicalBaseline | None = None  # the clinical-only regression of the same training data


@dataclass
class Bundle:
    members: list[Member]
    config: Config
    threshold: float
    info: dict
    profile: Profile | None
    recalibration: Recalibration | None = None  # fitted to one site's breasts (`mammofuse recalibrate`)
    operating_point: OperatingPoint = OperatingPoint()  # how the threshold was chosen on validation

    @property
    def nets(self) -> list[TwoViewNet]:
        return [m.net for m in self.members]

    @property
    def baselines(self) -> list[ClinicalBaseline] | None:
        """Every member's clinical-only regression; None where the model uses no clinical data or the
        bundle was written before bundles carried them."""
        found = [m.baseline for m in self.members if m.baseline is not None]
        return found if len(found) == len(self.members) else None


def _save_member(out: Path, run: Run) -> float:
    """The weights and encoder of a trained, evaluated run into `out`; returns its threshold."""
    out.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(run.read_net(), str(out / WEIGHTS))
    run.read_encoder().save(out / ENCODER)
    for path, name in ((run.stacker, STACKER), (run.baseline, BASELINE)):
        if path.is_file():
            shutil.copyfile(path, out / name)
    return run.read_evaluation().model.threshold


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != SUMS
    )


def write_sums(folder: Path) -> None:
    """SHA256SUMS of every file of the bundle, in `sha256sum` format."""
    lines = [f"{sha256(folder / name)}  {name}\n" for name in _files(folder)]
    replace_text(folder / SUMS, "".join(lines))


def verify_bundle(folder: Path) -> list[str]:
    """What is wrong with a bundle's files: changed, missing or unlisted (empty when it is intact)."""
    sums = folder / SUMS
    if not sums.is_file():
        return [f"{sums}: missing (not a bundle of format {BUNDLE_FORMAT}, or damaged)"]
    listed: dict[str, str] = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    found = []
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            found.append(f"{path}: missing")
        elif sha256(path) != digest:
            found.append(f"{path}: changed since the bundle was written (SHA-256 differs)")
    found += [f"{folder / name}: not part of the bundle" for name in _files(folder) if name not in listed]
    return found


def _write(out: Path, cfg: Config, info: dict, validation: str) -> Path:
    save_config(cfg, out / CONFIG)
    info = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "backbone": cfg.model.backbone,
        "preprocess": cfg.preprocess.settings(),
        **info,
    }
    BundleInfo.model_validate(info)  # what is written is what is read
    replace_text(out / INFO, json.dumps(info, indent=2))
    replace_text(out / CARD, model_card(cfg, info, validation))
    write_sums(out)
    return out


def _apparent_line(parts: Sequence[tuple[str, ModelMetrics | PooledMetrics | None]]) -> str:
    """The model card's line on overfitting (result.apparent_text), or nothing where it was not measured."""
    text = apparent_text(parts)
    if not text:
        return ""
    return (
        f"- apparent AUC (on the breasts it learnt from): {text}; optimism = apparent minus held-out AUC, "
        "large where it overfits\n"
    )


def write_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the bundle of a trained and evaluated run (default: the run's bundle/ folder)."""
    run = Run(run_dir)
    out = out or run.bundle
    shutil.rmtree(out, ignore_errors=True)  # a bundle is written whole
    threshold = _save_member(out, run)
    cfg, evaluation = run.read_config(), run.read_evaluation()
    test, baseline = evaluation.model.test, evaluation.baseline
    validation = (
        f"Patient-grouped, label-stratified split (seed {cfg.split.seed}); the threshold {threshold:.3f} was "
        f"chosen on validation ({evaluation.operating_point.text}) and applied unchanged to test.\n"
        f"- test: {test.n} breasts ({test.positives} {cfg.labels.positive}), AUC {test.auc.text} "
        + (
            f"(95 % bootstrap over {test.auc.unit}s, stratified by label, {test.auc.n_bootstrap} resamples)\n"
            if test.auc.has_interval
            else "(too few breasts of a class for an interval: these figures mean little)\n"
        )
    )
    if baseline is not None:
        validation += f"- clinical-only baseline, same split: AUC {baseline.test.auc.text}\n"
    validation += _apparent_line([(evaluation.model_name, evaluation.model), (CLINICAL_ONLY, baseline)])
    if needed := needed_text(run):
        validation += f"- {needed}\n"
    data, predictions = run.cached_data(), run.read_predictions()
    test_scores = predictions.loc[predictions["split"] == "test", "probability"].to_numpy()
    info = {
        "kind": "single model",
        "profile": training_profile(data[data["split"] == "train"], test_scores, cfg.train.seed).model_dump(),
        "n_clinical": len(run.read_encoder().feature_names),
        "threshold": threshold,
        "operating_point": evaluation.operating_point.model_dump(),
        "test_auc": test.auc.model_dump(),
        "baseline_test_auc": baseline.test.auc.model_dump() if baseline else None,
    }
    return _write(out, cfg, info, validation)


def ensemble_problem(run_dir: Path) -> str | None:
    """Why the folds of a cross-validation cannot make one fold ensemble, if they cannot: fold models of a
    learning curve's share (data.train_fraction below 1: a model of part of the data, not one to use), or
    tuned folds (nested cross-validation) that chose other network settings than the run's config (dropout
    aside, which holds no weights). The ensemble loads every member with the run's settings."""
    run = Run(run_dir)
    cfg = run.read_config()
    if cfg.data.train_fraction < 1:
        return (
            f"its fold models learnt from {cfg.data.train_fraction:.0%} of each fold's training patients (a "
            "learning curve's share), so they make no fold ensemble: a model of part of the data"
        )

    def network(cfg: Config) -> dict:
        return cfg.model.model_dump(mode="json", exclude={"dropout"})

    shared = network(cfg)
    other = [f.dir.name for f in run.fold_runs() if network(f.read_config()) != shared]
    if not other:
        return None
    return (
        f"the tuned folds {', '.join(other)} chose network settings other than the cross-validation's own, "
        "so the folds make no fold ensemble; for a model to use, tune on the whole cohort (`mammofuse "
        "tune`) and train its best.toml"
    )


def write_cv_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the fold ensemble of a finished cross-validation: every fold model is a member."""
    run = Run(run_dir)
    out = out or run.bundle
    cfg, evaluation = run.read_config(), run.read_cv_evaluation()
    shutil.rmtree(out, ignore_errors=True)  # a fold ensemble is written whole
    thresholds = {}
    for repeat in range(evaluation.repeats):
        for fold in range(evaluation.folds):
            name = f"r{repeat}f{fold}"
            thresholds[name] = _save_member(out / "members" / name, run.fold(repeat, fold))
    threshold = sum(thresholds.values()) / len(thresholds)
    model, baseline = evaluation.model, evaluation.baseline
    repeats = f"{evaluation.repeats} repeat" + ("s" if evaluation.repeats != 1 else "")
    validation = (
        f"{evaluation.folds}-fold patient-grouped, label-stratified cross-validation, {repeats} "
        f"(seed {cfg.split.seed}), over {evaluation.breasts} breasts ({evaluation.positives} "
        f"{cfg.labels.positive}) of {evaluation.patients} patients. Each fold model chose its threshold on a "
        f"validation part of its training folds ({evaluation.operating_point.text}); this ensemble uses "
        f"their mean, {threshold:.3f}.\n"
        f"- pooled out-of-fold AUC {model.auc.text} (95 % bootstrap over {model.auc.unit}s; each fold's "
        f"scores standardised on its validation breasts, one scale); per fold {model.fold_auc_text}\n"
        "- these figures are of the fold models, each on the breasts it never saw; the ensemble itself has "
        "not been scored on breasts that none of its members saw (`mammofuse predict --labels` does that, "
        "on a labelled cohort from elsewhere)\n"
    )
    if baseline is not None:
        validation += f"- clinical-only logistic regression in the same folds: AUC {baseline.auc.text}\n"
    validation += _apparent_line([(evaluation.model_name, model), (CLINICAL_ONLY, baseline)])
    if needed := needed_text(run):
        validation += f"- {needed}\n"
    if run.tuning.is_file():
        tuning = run.read_tuning()
        validation += (
            f"- nested: each fold model's settings ({', '.join(tuning['space'])}) were chosen by "
            f"{tuning['trials']} trials on its training folds alone (the cross-validation's "
            "folds/*/config.toml); config.toml here is the untuned starting point\n"
        )
    every_breast = run.fold(0, 0).read_data()  # each is a training breast of some member
    info = {
        "kind": "fold ensemble",
        "profile": training_profile(
            every_breast, run.read_oof()["probability"].to_numpy(), cfg.train.seed
        ).model_dump(),
        "members": thresholds,
        "threshold": threshold,
        "operating_point": evaluation.operating_point.model_dump(),
        "cv_auc": model.auc.model_dump(),
        "baseline_cv_auc": baseline.auc.model_dump() if baseline else None,
    }
    return _write(out, cfg, info, validation)


def model_card(cfg: Config, info: dict, validation: str) -> str:
    labels = cfg.labels
    members = info.get("members")
    ensemble = f"An ensemble of {len(members)} fold models, probabilities averaged. " if members else ""
    card = [
        "# Model card",
        f"**What it predicts.** The probability that a breast is {labels.positive} (label 1) rather than "
        f"{labels.negative} (label 0), from its CC and MLO mammograms and clinical data. Endpoint "
        f"{labels.name}: {labels.definition}.",
        "**Intended use.** Research: studying whether mammograms add to clinical data for this endpoint, on "
        "cohorts like the training data. Not for clinical decisions.",
        f"**Data.** {cfg.description or 'The cohort named in config.toml.'} Trained on "
        f"{info['profile']['breasts']} breasts.",
        f"**Model.** {ensemble}{describe(cfg.model)} Input: {cfg.preprocess.mode} preprocessing at "
        f"{cfg.preprocess.output_shape[0]} x {cfg.preprocess.output_shape[1]} pixels.",
        f"**Validation.** {validation.rstrip()}",
        "**Limits.** Validated on one cohort; performance on other scanners, populations or prevalences is "
        "unknown until measured there (`mammofuse predict --labels` measures it, beside the clinical-only "
        "model that travels with this bundle when it uses clinical data). Inputs must follow the same "
        "ingestion and preprocessing (they do when scored through `mammofuse predict`, which flags each "
        "breast unlike the training data: its images' size, pixel spacing, manufacturer or brightness, a "
        "clinical value far beyond the training values or one that looks typed in another unit).",
        f"**Made with** mammofuse {info['versions']['mammofuse']}, torch {info['versions']['torch']}, on "
        f"{info['created']}.",
    ]
    return "\n\n".join(card) + "\n"  # a paragraph a line: Markdown and the report wrap it to the page


def load_bundle(path: Path) -> Bundle:
    """Load a bundle after checking every file against SHA256SUMS and its schema; a damaged, edited or
    older bundle is a ModelError naming the file, never a silent misuse."""
    meta_path = path / INFO
    if not meta_path.is_file():
        raise ModelError(f"{path}: not a model bundle (no {INFO})")
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path}: not valid JSON ({exc})") from None
    if raw.get("format") != BUNDLE_FORMAT:
        made = raw.get("versions", {}).get("mammofuse", "unknown")
        raise ModelError(
            f"{path}: bundle format {raw.get('format')} (made by mammofuse {made}); this mammofuse "
            f"{__version__} reads format {BUNDLE_FORMAT}. Re-export it with a matching version."
        )
    problems = verify_bundle(path)
    if problems:
        raise ModelError(f"{path}: refused, the bundle is not as it was written: " + "; ".join(problems))
    try:
        info = BundleInfo.model_validate(raw)
    except ValidationError as exc:
        raise ModelError(f"{meta_path}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    cfg = load_config(path / CONFIG)
    folders = [path / "members" / name for name in info.members] if info.members else [path]
    members = [_load_member(folder, cfg) for folder in folders]
    recalibration = None
    if (path / RECALIBRATION).is_file():  # checked against SHA256SUMS with the rest
        try:
            text = (path / RECALIBRATION).read_text(encoding="utf-8")
            recalibration = Recalibration.model_validate_json(text)
        except ValidationError as exc:
            raise ModelError(f"{path / RECALIBRATION}: the recalibration cannot be read ({exc})") from None
    threshold, point = info.threshold, info.operating_point
    if recalibration is not None and recalibration.threshold is not None:  # the site's own operating point
        threshold, point = recalibration.threshold, recalibration.operating_point or point
    return Bundle(members, cfg, threshold, raw, info.profile, recalibration, point)


def _load_member(folder: Path, cfg: Config) -> Member:
    try:
        encoder = ClinicalEncoder.load(folder / ENCODER)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    weights = folder / WEIGHTS
    net = load_network(cfg.model, len(encoder.feature_names), weights, str(weights))
    stacker = None
    if cfg.model.fusion == "late":
        try:
            stacker = Stacker.model_validate_json((folder / STACKER).read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise ModelError(
                f"{folder / STACKER}: the late-fusion regression cannot be read ({exc})"
            ) from None
    baseline = None
    if (folder / BASELINE).is_file():  # checked against SHA256SUMS with the rest
        try:
            baseline = ClinicalBaseline.model_validate_json((folder / BASELINE).read_text(encoding="utf-8"))
        except ValidationError as exc:
            raise ModelError(
                f"{folder / BASELINE}: the clinical-only regression cannot be read ({exc})"
            ) from None
        if len(baseline.clinical) != len(encoder.feature_names):
            raise ModelError(
                f"{folder / BASELINE}: {len(baseline.clinical)} clinical weights for the encoder's "
                f"{len(encoder.feature_names)} features"
            )
    return Member(net, encoder, stacker, baseline)
