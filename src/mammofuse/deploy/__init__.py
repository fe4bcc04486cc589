"""Deploying a trained model: the self-contained bundle and scoring new breasts with it."""

from pathlib import Path

# `predict --labels` given no CSV: the label CSV of `--cohort` (kept light: the command line imports it)
COHORT_LABELS = Path("the label CSV of --cohort")
