"""A model bundle: everything `predict` needs, in one directory, loadable without the training run.

Made from a run by `write_bundle` (the `evaluate` command does it after evaluation), or from a
cross-validation by `write_cv_bundle` (the fold ensemble, `mammofuse cv` does it):

    model.pt        the network's state_dict (torch.load(weights_only=True))
    encoder.json    the clinical encoder fitted on the training split
    members/NAME/   a fold ensemble instead: model.pt + encoder.json of every fold model
    config.toml     the run's resolved config (model, preprocessing, ingestion rules)
    bundle.json     format, library versions, threshold (chosen on validation), metrics, members
    model_card.md   what the model is for, how it was validated, its limits

A bundle scores a breast with every member and averages their probabilities (the spread says how
much the members disagree); its threshold is the mean of the members' validation-chosen thresholds.
[MONAI bundle metadata.json carries the same contract.]
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import torch
import torchvision

from mammofuse import __version__
from mammofuse.config import Config, load_config, save_config
from mammofuse.data.clinical import ClinicalEncoder
from mammofuse.models import ModelError, TwoViewNet, load_network
from mammofuse.runs import Run

BUNDLE_FORMAT = 1


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


@dataclass
class Bundle:
    members: list[Member]
    config: Config
    threshold: float
    info: dict

    @property
    def nets(self) -> list[TwoViewNet]:
        return [m.net for m in self.members]


def _save_member(out: Path, run: Run) -> float:
    """model.pt and encoder.json of a trained, evaluated run into `out`; returns its threshold."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(run.read_net().state_dict(), out / "model.pt")
    run.read_encoder().save(out / "encoder.json")
    return run.read_evaluation().model.threshold


def _write(out: Path, cfg: Config, info: dict, validation: str) -> Path:
    save_config(cfg, out / "config.toml")
    info = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "backbone": cfg.model.backbone,
        "preprocess": cfg.preprocess.settings(),
        **info,
    }
    (out / "bundle.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    (out / "model_card.md").write_text(model_card(cfg, info, validation), encoding="utf-8")
    return out


def write_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the bundle of a trained and evaluated run (default: the run's bundle/ folder)."""
    run = Run(run_dir)
    out = out or run.bundle
    threshold = _save_member(out, run)
    cfg, evaluation = run.read_config(), run.read_evaluation()
    test, baseline = evaluation.model.test, evaluation.baseline
    validation = (
        f"Patient-grouped, label-stratified split (seed {cfg.split.seed}); the threshold {threshold:.3f} was "
        f"chosen on validation (Youden) and applied unchanged to test.\n"
        f"- test: {test.n} breasts ({test.positives} {cfg.labels.positive}), AUC {test.auc.text}\n"
        f"  (95 % bootstrap over {test.auc.unit}s, stratified by label, {test.auc.n_bootstrap} resamples)\n"
    )
    if baseline is not None:
        validation += f"- clinical-only baseline, same split: AUC {baseline.test.auc.text}\n"
    info = {
        "kind": "single model",
        "n_clinical": len(run.read_encoder().feature_names),
        "threshold": threshold,
        "test_auc": test.auc.model_dump(),
        "baseline_test_auc": baseline.test.auc.model_dump() if baseline else None,
    }
    return _write(out, cfg, info, validation)


def write_cv_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the fold ensemble of a finished cross-validation: every fold model is a member."""
    run = Run(run_dir)
    out = out or run.bundle
    cfg, evaluation = run.read_config(), run.read_cv_evaluation()
    thresholds = {}
    for repeat in range(evaluation.repeats):
        for fold in range(evaluation.folds):
            name = f"r{repeat}f{fold}"
            thresholds[name] = _save_member(out / "members" / name, run.fold(repeat, fold))
    threshold = sum(thresholds.values()) / len(thresholds)
    model, baseline = evaluation.model, evaluation.baseline
    validation = (
        f"{evaluation.folds}-fold patient-grouped, label-stratified cross-validation, {evaluation.repeats} "
        f"repeat(s) (seed {cfg.split.seed}), over {evaluation.breasts} breasts ({evaluation.positives} "
        f"{cfg.labels.positive}) of {evaluation.patients} patients. Each fold model chose its threshold on a "
        f"validation part of its training folds; this ensemble uses their mean, {threshold:.3f}.\n"
        f"- pooled out-of-fold AUC {model.auc.text} (95 % bootstrap over {model.auc.unit}s); "
        f"per fold {model.fold_auc_text}\n"
        "- these figures are of the fold models, each on the breasts it never saw; the ensemble of all of\n"
        "  them has not been tested on new breasts: expect it to do as well or slightly better\n"
    )
    if baseline is not None:
        validation += f"- clinical-only logistic regression in the same folds: AUC {baseline.auc.text}\n"
    info = {
        "kind": "fold ensemble",
        "members": thresholds,
        "threshold": threshold,
        "cv_auc": model.auc.model_dump(),
        "baseline_cv_auc": baseline.auc.model_dump() if baseline else None,
    }
    return _write(out, cfg, info, validation)


def model_card(cfg: Config, info: dict, validation: str) -> str:
    labels = cfg.labels
    members = info.get("members")
    ensemble = f"An ensemble of {len(members)} fold models, probabilities averaged. " if members else ""
    views = "shared" if cfg.model.shared_backbone else "one per view"
    return f"""# Model card

**What it predicts.** The probability that a breast is {labels.positive} (label 1) rather than
{labels.negative} (label 0), from its CC and MLO mammograms and clinical data. Endpoint {labels.name}:
{labels.definition}. A research model: not for clinical decisions.

**Model.** {ensemble}Two {cfg.model.backbone} backbones ({views}, initial weights:
{cfg.model.pretrained}), pooled features joined with the clinical features, a linear head.
Input: {cfg.preprocess.mode} preprocessing at {cfg.preprocess.output_shape[0]} x
{cfg.preprocess.output_shape[1]} pixels.

**Validation.** {validation}
**Limits.** Validated on one cohort; performance on other scanners, populations or prevalences is
unknown until measured there. Inputs must follow the same ingestion and preprocessing (they do when
scored through `mammofuse predict`).

**Made with** mammofuse {info["versions"]["mammofuse"]}, torch {info["versions"]["torch"]},
on {info["created"]}.
"""


def load_bundle(path: Path) -> Bundle:
    """Load a bundle; a bundle of another format is a clear error, never a silent misuse."""
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        raise ModelError(f"{path}: not a model bundle (no bundle.json)")
    info = json.loads(meta_path.read_text(encoding="utf-8"))
    if info.get("format") != BUNDLE_FORMAT:
        made = info.get("versions", {}).get("mammofuse", "unknown")
        raise ModelError(
            f"{path}: bundle format {info.get('format')} (made by mammofuse {made}); this mammofuse "
            f"{__version__} reads format {BUNDLE_FORMAT}. Re-export it with a matching version."
        )
    cfg = load_config(path / "config.toml")
    folders = [path / "members" / name for name in info["members"]] if "members" in info else [path]
    members = [_load_member(folder, cfg) for folder in folders]
    return Bundle(members, cfg, float(info["threshold"]), info)


def _load_member(folder: Path, cfg: Config) -> Member:
    encoder = ClinicalEncoder.load(folder / "encoder.json")
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that weights_only refuses
        raise ModelError(
            f"{folder / 'model.pt'}: cannot be read as weights ({type(exc).__name__}: {exc})"
        ) from None
    return Member(
        load_network(cfg.model, len(encoder.feature_names), state, str(folder / "model.pt")), encoder
    )
