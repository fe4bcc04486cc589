"""DDP on the CPU (gloo, 2 processes): one validation AUC over every breast, checkpoints and resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.evaluation.metrics import auc

WORKER = Path(__file__).with_name("ddp_worker.py")


def test_the_validation_auc_is_computed_once_over_the_gathered_scores(tmp_path):
    subprocess.run([sys.executable, str(WORKER), str(tmp_path)], check=True, timeout=300, cwd=tmp_path)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    rows = torch.cat([p["rows"] for p in parts]).numpy()
    assert len(rows) == 46 and len(np.unique(rows)) == 45  # the sampler padded one breast, twice scored
    trained = [set(p["trained"].tolist()) for p in parts]  # each process trained on its half
    assert len(trained[0]) == len(trained[1]) == 32 and trained[0] | trained[1] == set(range(64))
    _, first = np.unique(rows, return_index=True)
    probs = torch.cat([p["probs"] for p in parts]).numpy()[first]
    labels = torch.cat([p["labels"] for p in parts]).numpy()[first]
    logged = json.loads((tmp_path / "logged.json").read_text())
    assert logged["val_auc"] == pytest.approx(auc(labels, probs), abs=1e-6)
    per_process = np.mean([auc(p["labels"].numpy(), p["probs"].numpy()) for p in parts])
    assert abs(per_process - logged["val_auc"]) > 1e-6  # what the old mean of per-process AUCs gave differs


def test_train_under_ddp_checkpoints_and_resumes(ready):
    preset = ready.parent / "ddp.toml"
    preset.write_text(
        f'extends = "{ready.parent / "fast.toml"}"\n[train]\ndevices = "2"\nddp = true\nepochs = 1\n'
    )
    train = [sys.executable, "-m", "mammofuse", "train", str(ready / "cohort.toml"), "--preset", str(preset)]
    env = {**os.environ, "MAMMOFUSE_NO_PROGRESS": "1"}
    subprocess.run(train, check=True, timeout=300, env=env)
    run = ready / "work" / "runs" / "ddp"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    done = subprocess.run(
        [*train, "--epochs", "2"], check=True, timeout=300, env=env, capture_output=True, text=True
    )
    assert "resuming from" in done.stdout and "(1 of 2 epochs done)" in done.stdout
    epochs = pd.read_csv(run / "epochs.csv")
    assert epochs["epoch"].tolist() == [1, 2] and epochs["val_auc"].between(0, 1).all()
