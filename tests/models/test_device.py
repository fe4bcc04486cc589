"""Where evaluation, Grad-CAM and prediction run: MAMMOFUSE_DEVICE, else the GPU where there is one.
tests/training/test_gpu.py checks on a GPU that its scores and maps agree with the CPU's."""

import json
import shutil

import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import ConfigError
from mammofuse.models import inference_device

VARIABLE = "MAMMOFUSE_DEVICE"


def test_without_the_variable_the_gpu_where_there_is_one(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert inference_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(VARIABLE, " cpu ")
    assert inference_device() == torch.device("cpu")


@pytest.mark.parametrize(("value", "says"), [("gpu0", "names no device"), ("meta", "cpu or cuda only")])
def test_a_value_naming_no_usable_device_is_refused_by_name(monkeypatch, value, says):
    monkeypatch.setenv(VARIABLE, value)
    with pytest.raises(ConfigError, match=f"{VARIABLE}='{value}'.*{says}"):
        inference_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU that this machine lacks")
def test_evaluate_asked_for_a_missing_gpu_stops_with_one_line_and_cpu_scores_as_before(
    trained_master, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    shutil.copytree(trained_master, run)
    monkeypatch.setenv(VARIABLE, "cuda")
    capsys.readouterr()
    assert main(["evaluate", str(run)]) != 0
    assert "MAMMOFUSE_DEVICE='cuda': this machine has no CUDA GPU" in capsys.readouterr().out
    monkeypatch.setenv(VARIABLE, "cpu")
    assert main(["evaluate", str(run)]) == 0
    metrics, before = (json.loads((r / "metrics.json").read_text()) for r in (run, trained_master))
    assert metrics | {"run": ""} == before | {"run": ""}  # the same scores, to the last digit
