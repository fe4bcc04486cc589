"""Cohorts made ready for training once per session (synth, ingest, preprocess, split); a trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.cohort.synth import SynthOptions, synthesize
from mammofuse.config import ModelConfig, TrainConfig
from mammofuse.data.clinical import AuxiliaryTargets
from mammofuse.models import create_model
from mammofuse.training.module import BreastClassifier
from tests.cohort.helpers import edit_config

FAST_PRESET = """
[model]
backbone = "tiny_cnn"
pretrained = "none"
grey = "adapt"

[train]
optimizer = "adamw"
lr = 0.003
epochs = 2
batch_size = 32

[data]
augment = false
"""


def prepare(root: Path, breasts: int, seed: int, size: tuple[int, int], relabel=None) -> Path:
    """Synthesize a cohort (`relabel(cohort)` may rewrite its CSVs), then ingest, preprocess and split."""
    cohort = root / "cohort"
    synthesize(cohort, SynthOptions(breasts=breasts, seed=seed, image_size=size, workers=1))
    if relabel is not None:
        relabel(cohort)
    config = cohort / "cohort.toml"
    edit_config(cohort, preprocess={"workers": 1})
    for argv in (["ingest", str(config)], ["preprocess", str(config)], ["split", str(config)]):
        assert main(argv) == 0
    (root / "fast.toml").write_text(FAST_PRESET)
    return cohort


@pytest.fixture(scope="session")
def ready_master(tmp_path_factory) -> Path:
    """240 breasts at 64 x 52 pixels, ready to train (work folder: cohort/work)."""
    return prepare(tmp_path_factory.mktemp("ready"), breasts=240, seed=11, size=(64, 52))


@pytest.fixture
def ready(ready_master: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ready"
    shutil.copytree(ready_master.parent, out)
    # The copied config points at the copied cohort (its paths are relative), but the copied work folder's
    # CSVs name the master's DICOM files and cache: a test that changes a DICOM changes a copy of its own
    # and points the manifest at it, or every later test sees the change.
    return out / "cohort"


def label_is_her2(cohort: Path) -> None:
    """Make the label a function of one clinical input: positive exactly when HER2 is positive."""
    labels = pd.read_csv(cohort / "labels.csv", dtype=str)
    clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
    her2 = dict(zip(zip(clinical["patient_id"], clinical["side"].str[0].str.upper()), clinical["her2"]))
    positive = [her2.get((p, s)) == "positive" for p, s in zip(labels["patient_id"], labels["side"])]
    labels["invasive_fraction"] = [40 if pos else 90 for pos in positive]
    labels.to_csv(cohort / "labels.csv", index=False)


@pytest.fixture(scope="session")
def her2_ready(tmp_path_factory) -> Path:
    """800 breasts at 40 x 32 pixels (a test split of about 80) whose label is HER2 status, a clinical
    input: a model trained on the real labels cannot miss it, one on shuffled labels cannot find it."""
    return prepare(
        tmp_path_factory.mktemp("her2"), breasts=800, seed=12, size=(40, 32), relabel=label_is_her2
    )


@pytest.fixture(scope="session")
def trained_master(ready_master: Path, tmp_path_factory) -> Path:
    """A run trained (2 epochs) and evaluated on the small cohort; read it, do not change it."""
    root = tmp_path_factory.mktemp("trained") / "ready"
    shutil.copytree(ready_master.parent, root)
    cohort = root / "cohort"
    assert main(["train", str(cohort / "cohort.toml"), "--preset", str(root / "fast.toml")]) == 0
    run_dir = cohort / "work" / "runs" / "fast"
    assert main(["evaluate", str(run_dir)]) == 0
    return run_dir


def train_variant(ready: Path, name: str, toml: str, *extra: str) -> Path:
    """Train a variant of the fast preset (`toml`: its differences, in TOML) on a ready cohort; return
    the run folder (WORK/runs/NAME)."""
    preset = ready.parent / f"{name}.toml"
    preset.write_text(f'extends = "{ready.parent / "fast.toml"}"\n{toml}')
    assert main(["train", str(ready / "cohort.toml"), "--preset", str(preset), *extra]) == 0
    return ready / "work" / "runs" / name


def step_module(model: ModelConfig, device: str, train: TrainConfig | None = None) -> BreastClassifier:
    """A training module with two auxiliary heads (a category, a number) and 3 clinical inputs, on `device`:
    for running single training steps outside Lightning."""
    aux = AuxiliaryTargets({"her2": 0.5, "ki67": 0.2}, categories={"her2": ["n", "p"]}, means={"ki67": 0.0})
    return BreastClassifier(create_model(model, 3), train or TrainConfig(), aux).to(device)


def step_batch(size: int, device: str) -> dict[str, torch.Tensor]:
    """A batch for `step_module` (size a multiple of 4), as the loader delivers it to `device`; auxiliary
    targets partly unknown (NaN), one breast with none known."""
    nan = float("nan")
    batch = {
        "cc": torch.rand(size, 1, 128, 64),
        "mlo": torch.rand(size, 1, 128, 64),
        "clinical": torch.rand(size, 3),
        "label": torch.arange(size) % 2,
        "row": torch.arange(size),
        "auxiliary": torch.tensor([[1.0, 0.3], [nan, -1.0], [0.0, nan], [nan, nan]] * (size // 4)),
    }
    return {key: value.to(device) for key, value in batch.items()}


def as_a_gpu_writes_it(optimizer_state: dict) -> None:
    """Mark a saved optimizer state as a GPU run writes it (training.module.fused_on)."""
    for group in optimizer_state["param_groups"]:
        group["fused"] = True


def cv(cohort, *extra) -> int:
    config = str(cohort / "cohort.toml")
    return main(["cv", config, "--preset", str(cohort.parent / "fast.toml"), "--epochs", "1", *extra])


@pytest.fixture(scope="session")
def cv_master(ready_master, tmp_path_factory):
    """A finished 3-fold cross-validation, 2 repeats (1 epoch per fold) of the small cohort."""
    root = tmp_path_factory.mktemp("cv") / "ready"
    shutil.copytree(ready_master.parent, root)
    assert cv(root / "cohort", "--folds", "3", "--repeats", "2") == 0
    return root / "cohort" / "work" / "runs" / "fast-cv"


@pytest.fixture
def cv_copy(cv_master, tmp_path):
    """A copy of the finished cross-validation's cohort folder, to change: (its cohort, its run)."""
    root = tmp_path / "ready"
    shutil.copytree(cv_master.parents[3], root)
    return root / "cohort", root / "cohort" / "work" / "runs" / "fast-cv"
