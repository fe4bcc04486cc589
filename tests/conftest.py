"""Shared fixtures: tiny cohorts written by the project's own generator."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mammofuse.cohort.synth import SynthOptions, synthesize
from tests.cohort.helpers import edit_config

os.environ.setdefault("MAMMOFUSE_NO_PROGRESS", "1")
pytest_plugins = ["tests.training.fixtures"]

TINY = SynthOptions(breasts=16, seed=3, image_size=(96, 80), workers=1, na_fraction=0.15)


@pytest.fixture(scope="session")
def tiny_cohort_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "cohort"
    synthesize(out, TINY)
    # 14 breasts after NA drops, 3 positive: 10 % parts would hold one breast and lack a class
    edit_config(out, split={"test_fraction": 0.3, "val_fraction": 0.3})
    return out


@pytest.fixture
def tiny_cohort(tiny_cohort_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny cohort that a test may damage."""
    out = tmp_path / "cohort"
    shutil.copytree(tiny_cohort_master, out)
    return out
