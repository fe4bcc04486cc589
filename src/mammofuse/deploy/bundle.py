"""A model bundle: everything `predict` needs, in one directory, loadable without the training run.

Made from a run by `write_bundle` (the `evaluate` command does it after evaluation):

    model.pt        the network's state_dict (torch.load(weights_only=True))
    config.toml     the run's resolved config (model, preprocessing, ingestion rules)
    encoder.json    the clinical encoder fitted on the training split
    bundle.json     format, library versions, threshold (chosen on validation), test metrics
    model_card.md   what the model is for, how it was validated, its limits
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
from mammofuse.evaluation.result import SplitMetrics
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
class Bundle:
    net: TwoViewNet
    config: Config
    encoder: ClinicalEncoder
    threshold: float
    info: dict


def write_bundle(run_dir: Path, out: Path | None = None) -> Path:
    """Write the bundle of a trained and evaluated run (default: the run's bundle/ folder)."""
    run = Run(run_dir)
    out = out or run.bundle
    out.mkdir(parents=True, exist_ok=True)
    cfg, encoder, evaluation = run.read_config(), run.read_encoder(), run.read_evaluation()
    torch.save(run.read_net().state_dict(), out / "model.pt")
    save_config(cfg, out / "config.toml")
    encoder.save(out / "encoder.json")
    test = evaluation.model.test
    baseline = evaluation.baseline
    info = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "backbone": cfg.model.backbone,
        "n_clinical": len(encoder.feature_names),
        "threshold": evaluation.model.threshold,
        "preprocess": cfg.preprocess.settings(),
        "test_auc": test.auc.model_dump(),
        "baseline_test_auc": baseline.test.auc.model_dump() if baseline else None,
    }
    (out / "bundle.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    baseline_text = baseline.test.auc.text if baseline else None
    (out / "model_card.md").write_text(model_card(cfg, info, test, baseline_text), encoding="utf-8")
    return out


def model_card(cfg: Config, info: dict, test: SplitMetrics, baseline_auc: str | None) -> str:
    labels = cfg.labels
    base_line = f"- clinical-only baseline, same split: AUC {baseline_auc}\n" if baseline_auc else ""
    return f"""# Model card

**What it predicts.** The probability that a breast is {labels.positive} (label 1) rather than
{labels.negative} (label 0), from its CC and MLO mammograms and clinical data. Endpoint {labels.name}:
{labels.definition}. A research model: not for clinical decisions.

**Model.** Two {cfg.model.backbone} backbones ({"shared" if cfg.model.shared_backbone else "one per view"},
initial weights: {cfg.model.pretrained}), pooled features joined with {info["n_clinical"]} clinical features,
a linear head. Input: {cfg.preprocess.mode} preprocessing at {cfg.preprocess.output_shape[0]} x
{cfg.preprocess.output_shape[1]} pixels.

**Validation.** Patient-grouped, label-stratified split (seed {cfg.split.seed}); the threshold
{info["threshold"]:.3f} was chosen on validation (Youden) and applied unchanged to test.
- test: {test.n} breasts ({test.positives} {labels.positive}), AUC {test.auc.text}
  (95 % bootstrap over {test.auc.unit}s, stratified by label, {test.auc.n_bootstrap} resamples)
{base_line}
**Limits.** Validated on one cohort and one split; performance on other scanners, populations or
prevalences is unknown until measured there. Inputs must follow the same ingestion and preprocessing
(they do when scored through `mammofuse predict`).

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
    encoder = ClinicalEncoder.load(path / "encoder.json")
    try:
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a pickle that weights_only refuses
        raise ModelError(
            f"{path / 'model.pt'}: cannot be read as weights ({type(exc).__name__}: {exc})"
        ) from None
    net = load_network(cfg.model, len(encoder.feature_names), state, str(path / "model.pt"))
    return Bundle(net, cfg, encoder, float(info["threshold"]), info)
