"""A model bundle: everything `predict` needs, in one directory, loadable without the training run.

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
from mammofuse.evaluation.metrics import ci_text
from mammofuse.models import ModelError, TwoViewNet, create_model

BUNDLE_FORMAT = 1
BUNDLE = "bundle"


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


def write_bundle(run_dir: Path, net: TwoViewNet, metrics: dict, out: Path | None = None) -> Path:
    """Write the bundle of a trained and evaluated run (default RUN_DIR/bundle)."""
    out = out or run_dir / BUNDLE
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(run_dir / "config.toml")
    encoder = ClinicalEncoder.load(run_dir / "encoder.json")
    torch.save(net.state_dict(), out / "model.pt")
    save_config(cfg, out / "config.toml")
    encoder.save(out / "encoder.json")
    test = metrics["model"]["test"]
    info = {
        "format": BUNDLE_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "backbone": cfg.model.backbone,
        "n_clinical": len(encoder.feature_names),
        "threshold": test["at_youden"]["threshold"],
        "preprocess": cfg.preprocess.settings(),
        "test_auc": test["auc"],
        "baseline_test_auc": metrics.get("baseline", {}).get("test", {}).get("auc"),
    }
    (out / "bundle.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    (out / "model_card.md").write_text(model_card(cfg, info, test), encoding="utf-8")
    return out


def model_card(cfg: Config, info: dict, test: dict) -> str:
    auc = test["auc"]
    base = info.get("baseline_test_auc")
    base_line = f"- clinical-only baseline, same split: AUC {ci_text(base)}\n" if base else ""
    return f"""# Model card

**What it predicts.** The probability that a breast's tumour is EIC positive (label 1: invasive fraction below
{cfg.labels.threshold:g} %) from its CC and MLO mammograms and clinical data. A research model: not for
clinical decisions.

**Model.** Two {cfg.model.backbone} backbones ({"shared" if cfg.model.shared_backbone else "one per view"},
initial weights: {cfg.model.pretrained}), pooled features joined with {info["n_clinical"]} clinical features,
a linear head. Input: {cfg.preprocess.mode} preprocessing at {cfg.preprocess.output_shape[0]} x
{cfg.preprocess.output_shape[1]} pixels.

**Validation.** Patient-grouped, label-stratified split (seed {cfg.split.seed}); the threshold
{info["threshold"]:.3f} was chosen on validation (Youden) and applied unchanged to test.
- test: {test["n"]} breasts ({test["positives"]} positive), AUC {ci_text(auc)}
  (95 % stratified bootstrap, {auc["n_bootstrap"]} resamples)
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
    net = create_model(cfg.model.model_copy(update={"pretrained": "none"}), len(encoder.feature_names))
    try:
        net.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise ModelError(f"{path}/model.pt does not match the bundle's config ({exc})") from None
    return Bundle(net.eval(), cfg, encoder, float(info["threshold"]), info)
