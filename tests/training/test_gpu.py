"""Training, evaluation and Grad-CAM on a CUDA GPU: what only a GPU shows (skipped without one;
benchmarks/gpu_check.sh runs them). The CPU runs the same code paths in test_train.py,
tests/data/test_dataset.py and tests/models/test_device.py."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import DataConfig, ModelConfig, TrainConfig
from mammofuse.data.balance import BatchAugmentation
from mammofuse.domain import VIEWS
from mammofuse.explain.gradcam import attention_maps, gradcam
from mammofuse.models import create_backbone
from tests.models.test_tiles import breast_image, patch_net
from tests.training.fixtures import step_batch, step_module, train_variant
from tests.training.test_pretrain import pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # a step without a Trainer
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_training_step_never_makes_the_cpu_wait_for_the_gpu(dtype):
    """A step that copies a result to the CPU (.cpu(), .item(), a boolean mask's size) stalls the queue
    of GPU work behind it every batch; CUDA's sync debug mode turns any such wait into an error. The step
    includes the batch augmentation on the GPU (the device path)."""
    module = step_module(ModelConfig(backbone="tiny_cnn", pretrained="none", grey="adapt"), "cuda")
    augment = BatchAugmentation(DataConfig()).cuda()
    batch = step_batch(8, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            batch["cc"], batch["mlo"] = augment(batch["cc"]), augment(batch["mlo"])
            loss = module.training_step(batch, 0)
            module.validation_step(batch, 0)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item() and len(module._train) == len(module._val) == 1


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_optimizer_step_with_fp16_loss_scaling_never_makes_the_cpu_wait(optimizer):
    """On a GPU the optimizer is fused: one kernel updates every weight, and under fp16 loss scaling (GPUs
    without bf16) it skips an overflowed step on the GPU, where GradScaler's own check (`found_inf.item()`)
    makes the CPU wait every step."""
    module = step_module(ModelConfig(backbone="tiny_cnn", pretrained="none", grey="adapt"), "cuda")
    module.cfg = TrainConfig(optimizer=optimizer, scheduler="none")
    opt = module.configure_optimizers()
    assert all(group["fused"] for group in opt.param_groups)
    scaler = torch.amp.GradScaler("cuda")
    batch = step_batch(8, "cuda")
    before = [p.detach().clone() for p in module.net.parameters()]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = module.training_step(batch, 0)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    changed = any(not torch.equal(a, b) for a, b in zip(before, module.net.parameters()))
    assert changed or scaler.get_scale() < 2.0**16  # stepped, or skipped steps whose gradients overflowed


def test_a_run_on_the_gpu_picks_the_fast_settings_says_so_and_evaluates(ready):
    """`mammofuse train` with every setting left to the hardware: bf16 (or fp16), batches augmented on the
    GPU, loader processes; compiled on request. The checkpoint then evaluates like a CPU one."""
    run = train_variant(ready, "gpu", "[data]\naugment = true\n[train]\ncompile = true\n")
    (session,) = json.loads((run / "hardware.json").read_text())
    assert session["device"] == torch.cuda.get_device_name()
    assert session["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    assert session["augment on"] == "device" and session["loader processes"] > 0 and session["compiled"]
    epochs = pd.read_csv(run / "epochs.csv")
    assert len(epochs) == 2 and epochs["train_loss"].notna().all() and epochs["val_auc"].between(0, 1).all()
    assert main(["evaluate", str(run)]) == 0
    auc = json.loads((run / "metrics.json").read_text())["model"]["test"]["auc"]
    assert auc["low"] <= auc["auc"] <= auc["high"]


def test_pretraining_on_the_gpu_writes_weights_a_cpu_model_loads(ready, tmp_path):
    """`mammofuse pretrain` on the GPU (bf16 autocast, loader processes): its weights are plain CPU
    tensors that `model.pretrained` loads anywhere."""
    out = tmp_path / "gpu.pt"
    assert pretrain(ready, out, "--epochs", "1") == 0
    card = json.loads(Path(f"{out}.json").read_text())
    assert len(card["losses"]) == 1 and card["losses"][0] > 0
    state = torch.load(out, weights_only=True, map_location="cpu")["state_dict"]
    assert all(t.device.type == "cpu" for t in state.values())
    loaded = create_backbone("tiny_cnn", str(out), "adapt")
    assert torch.allclose(loaded.classifier_state()["features.0.weight"], state["features.0.weight"])


def test_evaluation_on_the_gpu_scores_as_the_cpu_does(trained_master, tmp_path, monkeypatch):
    """Evaluation runs on the GPU where there is one (models.device); its scores agree with the CPU's to
    about 1e-3 (cuDNN sums in another order and convolves in TF32), not to the last digit."""
    scores = {}
    for device in ("cpu", "cuda"):
        run = tmp_path / device
        shutil.copytree(trained_master, run)
        monkeypatch.setenv("MAMMOFUSE_DEVICE", device)
        assert main(["evaluate", str(run)]) == 0
        scores[device] = pd.read_csv(run / "predictions.csv")["probability"].to_numpy()
    np.testing.assert_allclose(scores["cuda"], scores["cpu"], atol=2e-3)


def test_a_patch_models_grad_cam_and_attention_on_the_gpu_are_the_cpus(monkeypatch):
    """Grad-CAM per tile and the tile attention, computed on the GPU, come back as the CPU's maps."""
    net = patch_net(attention_by_area=True)
    x, clinical = breast_image().repeat(2, 1, 1, 1), torch.rand(2, 3)
    maps = {}
    for device in ("cpu", "cuda"):
        monkeypatch.setenv("MAMMOFUSE_DEVICE", device)
        maps[device] = (gradcam(net, x, x.flip(-1), clinical), attention_maps(net, x, x.flip(-1), clinical))
    (cams, attention), (gpu_cams, gpu_attention) = maps["cpu"], maps["cuda"]
    for view in VIEWS:
        assert cams[view].max() > 0 and gpu_attention[view].shape == attention[view].shape
        np.testing.assert_allclose(gpu_cams[view], cams[view], atol=1e-2)
        np.testing.assert_allclose(gpu_attention[view], attention[view], atol=1e-3)
