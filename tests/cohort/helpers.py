"""Helpers that damage or reshape a synthetic cohort the way real exports are damaged or shaped."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pydicom
import tomli_w

from mammofuse.cli import main


def truth(cohort: Path) -> pd.DataFrame:
    return pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})


def image_path(cohort: Path, row: int, view: str) -> Path:
    return cohort / truth(cohort).loc[row, f"{view}_path"]


def edit_dicom(path: Path, edit) -> None:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)


def run_ingest(cohort: Path, capsys, *extra: str, config: Path | None = None):
    """Run `mammofuse ingest`; return exit code, printed text, manifest and exclusions."""
    work = cohort / "work"
    code = main(["ingest", str(config or cohort / "cohort.toml"), "--out", str(work), *extra])
    out = capsys.readouterr().out
    manifest = pd.read_csv(work / "manifest.csv", dtype={"patient_id": str}) if code == 0 else None
    exclusions = pd.read_csv(work / "exclusions.csv", dtype=str).fillna("") if code == 0 else None
    return code, out, manifest, exclusions


def edit_config(cohort: Path, **sections: dict) -> None:
    """Update keys of cohort.toml, section by section."""
    path = cohort / "cohort.toml"
    data = tomllib.loads(path.read_text())
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(tomli_w.dumps(data))
