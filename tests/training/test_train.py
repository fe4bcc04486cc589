import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import tomli_w
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from sklearn.metrics import roc_auc_score

from mammofuse.cli import main
from mammofuse.config import ConfigError, ModelConfig, TrainConfig, load_config
from mammofuse.data.dataset import augments_on_device
from mammofuse.data.epochs import EpochBatches
from mammofuse.presets import apply_preset
from mammofuse.runs import Run, Work
from mammofuse.training.run import AtomicCheckpointIO, train
from tests.cohort.helpers import edit_config
from tests.training.fixtures import as_a_gpu_writes_it, step_batch, step_module, train_variant
from tests.waits import FromTheCpu, HostReads


def run(cohort, *extra):
    config = str(cohort / "cohort.toml")
    preset = str(cohort.parent / "fast.toml")
    return main(["train", config, "--preset", preset, *extra])


class TestSmoke:
    def test_train_then_evaluate_writes_every_file_and_key(self, ready, capsys):
        assert run(ready) == 0
        run_dir = ready / "work" / "runs" / "fast"
        assert main(["evaluate", str(run_dir)]) == 0
        out = capsys.readouterr().out
        assert "epoch   1/2  train loss" in out and "val loss" in out and "AUC" in out
        for name in (
            "config.toml",
            "data.csv",
            "encoder.json",
            "epochs.csv",
            "predictions.csv",
            "metrics.json",
            "checkpoints/best.ckpt",
            "checkpoints/last.ckpt",
            "figures/roc.png",
            "figures/pr.png",
            "figures/calibration.png",
            "figures/training.png",
        ):
            assert (run_dir / name).is_file(), name
        metrics = json.loads((run_dir / "metrics.json").read_text())
        test = metrics["model"]["test"]
        assert {"auc", "brier", "at_0.5", "at_youden"} <= set(test)
        assert test["auc"]["low"] <= test["auc"]["auc"] <= test["auc"]["high"]
        assert {"sensitivity", "specificity", "ppv", "npv", "accuracy", "confusion"} <= set(test["at_youden"])
        assert "baseline" in metrics and "p_value" in metrics["comparison"]
        predictions = pd.read_csv(run_dir / "predictions.csv")
        assert set(predictions["split"]) == {"train", "val", "test"}
        assert {"key", "label", "probability", "baseline_probability"} <= set(predictions.columns)
        assert "clinical only" in out
        # the apparent AUC: the kept model and the regression on their own training breasts
        trained = predictions[predictions["split"] == "train"]
        data = pd.read_csv(run_dir / "data.csv", dtype={"patient_id": str})
        assert len(trained) == (data["split"] == "train").sum()
        result = Run(run_dir).read_evaluation()
        for column, part in (("probability", result.model), ("baseline_probability", result.baseline)):
            assert part.train_auc == pytest.approx(roc_auc_score(trained["label"], trained[column]))
        assert result.model.optimism == pytest.approx(result.model.train_auc - result.model.test.auc.auc)
        assert "apparent AUC (on its own training breasts, unaugmented): image + clinical" in out

    def test_checkpoints_load_with_weights_only_and_the_best_holds_just_the_weights(self, ready):
        assert run(ready) == 0
        folder = ready / "work" / "runs" / "fast" / "checkpoints"
        best, last = (
            torch.load(folder / f"{n}.ckpt", map_location="cpu", weights_only=True) for n in ("best", "last")
        )
        # evaluate, explain and bundle need the weights alone; a resume needs the optimizer's state too
        assert "state_dict" in best and "optimizer_states" not in best
        assert "optimizer_states" in last


class TestHonesty:
    def test_same_seed_same_metrics_on_cpu(self, ready):
        assert run(ready, "--run", "a") == 0 and run(ready, "--run", "b") == 0
        for name in ("a", "b"):
            assert main(["evaluate", str(ready / "work" / "runs" / name)]) == 0
        a, b = (pd.read_csv(ready / "work" / "runs" / n / "predictions.csv") for n in ("a", "b"))
        pd.testing.assert_frame_equal(a, b)

    def test_a_model_that_learnt_its_training_breasts_by_heart_shows_it_in_its_apparent_auc(self, ready):
        """12 epochs without augmentation on 190 training breasts: the model ranks them perfectly, and new
        breasts far worse; the report says how far it overfits."""
        run_dir = train_variant(ready, "by_heart", "[train]\nepochs = 12\n")
        assert main(["evaluate", str(run_dir)]) == 0 and main(["report", str(run_dir)]) == 0
        result = Run(run_dir).read_evaluation()
        assert result.model.train_auc is not None and result.model.optimism is not None
        assert result.model.train_auc > 0.95 and result.model.optimism > 0.15, result.model
        assert result.model.train_auc > result.model.val_auc + 0.1
        html = " ".join(Run(run_dir).report.read_text().split())
        shown = f"image + clinical {result.model.train_auc:.3f} (optimism {result.model.optimism:+.3f})"
        assert "How far each model overfits" in html and shown in html
        card = " ".join((run_dir / "bundle" / "model_card.md").read_text().split())
        assert f"apparent AUC (on the breasts it learnt from): {shown}" in card

    def test_shuffled_training_labels_give_a_test_auc_near_one_half(self, her2_ready):
        """A guard against leakage: with the labels shuffled within training nothing real can be learned,
        while the same training on the real labels (the positive control) finds the planted signal."""
        from mammofuse.evaluation.evaluate import evaluate_run

        aucs = {}
        for shuffled in (False, True):
            cfg = apply_preset(load_config(her2_ready / "cohort.toml"), str(her2_ready.parent / "fast.toml"))
            cfg.train.shuffle_labels = shuffled
            cfg.train.epochs = 3
            cfg.model.fusion = "mlp"  # with "concat" the image features drown HER2: 0.73-0.79, not 1.0
            run_dir = her2_ready / "work" / "runs" / f"shuffled-{shuffled}"
            train(cfg, run_dir)
            result = evaluate_run(run_dir)
            assert result.model.test.n >= 70
            aucs[shuffled] = result.model.test.auc.auc
            if not shuffled:  # the label is HER2, a clinical input: the ablation must show it (issue 13)
                removed = {name: auc.auc for name, auc in result.contributions.items()}
                assert removed["images shuffled"] > 0.9, removed
                assert removed["CC shuffled"] > 0.9 and removed["MLO shuffled"] > 0.9, removed
                assert removed["clinical at its training mean"] < 0.75, removed
        assert aucs[False] > 0.95, aucs  # the control finds HER2 (1.0 when written)
        # about 2.5 standard errors for this test split: fails when the split or the labels leak
        assert abs(aucs[True] - 0.5) < 0.2, aucs


class Interrupt(Callback):
    def __init__(self, at_epoch: int) -> None:
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.at_epoch:
            raise RuntimeError("power cut")


def interrupted_run(ready, name: str, done: int = 1, preset: str = "fast.toml"):
    """(config, run folder) of a 3-epoch run stopped by an exception after `done` epochs."""
    cfg = apply_preset(load_config(ready / "cohort.toml"), str(ready.parent / preset))
    cfg.train.epochs = 3
    run_dir = ready / "work" / "runs" / name
    with pytest.raises(RuntimeError, match="power cut"):
        train(cfg, run_dir, callbacks=[Interrupt(at_epoch=done)])
    return cfg, run_dir


def assert_same_last_weights(ready, *runs: str) -> None:
    """The runs' last checkpoints hold exactly the same weights."""
    first, second = (
        torch.load(ready / "work" / "runs" / r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for r in runs
    )
    for key, weight in second.items():
        assert torch.equal(first[key], weight), key


class TestResume:
    def test_an_interrupted_run_resumes_from_its_last_checkpoint(self, ready, capsys):
        cfg, run_dir = interrupted_run(ready, "resumed")
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1]
        train(cfg, run_dir)
        out = capsys.readouterr().out
        assert "resuming from" in out and "training on CPU" in out
        assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1, 2, 3]
        sessions = json.loads((run_dir / "hardware.json").read_text())  # how each session trained
        assert [s["from epoch"] for s in sessions] == [0, 1]
        assert sessions[1]["precision"] == "32-true"
        assert sessions[1]["torch threads"] == torch.get_num_threads()
        assert sessions[1]["device"] == f"CPU ({torch.backends.cpu.get_cpu_capability()})"
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        n_train = (pd.read_csv(run_dir / "data.csv")["split"] == "train").sum()
        steps = -(-n_train // cfg.train.batch_size)
        assert (state["epoch"], state["global_step"]) == (2, 3 * steps)  # third epoch (0-based), complete

    def test_a_run_whose_cache_was_removed_is_evaluated_on_its_images_made_again(self, ready, capsys):
        """The cache is derived: evaluate and explain make what was removed since training again, from the
        DICOM files, and score the same arrays (the checksums training recorded); where that cannot be, one
        line says why."""
        run_dir = train_variant(ready, "gone", "")
        assert main(["evaluate", str(run_dir)]) == 0
        before = json.loads((run_dir / "metrics.json").read_text())["model"]["test"]
        cache = ready / "work" / "cache"
        shutil.rmtree(cache)  # `rm -rf`, a cleaned scratch disk, `cache prune` from another study
        capsys.readouterr()
        assert main(["evaluate", str(run_dir)]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert (
            "preprocessed images of gone were gone from the cache" in out and "as training read them" in out
        )
        assert json.loads((run_dir / "metrics.json").read_text())["model"]["test"] == before
        shutil.rmtree(cache)
        assert main(["explain", str(run_dir), "--n", "1", "--cascade", "0"]) == 0
        assert "gone from the cache" in capsys.readouterr().out
        data = pd.read_csv(run_dir / "data.csv", dtype={"patient_id": str})
        moved = data.copy()
        moved.loc[0, "cc_path"] = str(ready / "dicom" / "moved.dcm")  # a breast whose entries are still there
        moved.to_csv(run_dir / "data.csv", index=False)
        Path(data.loc[1, "mlo_cache"]).unlink()  # another breast's: only that one is made again
        assert main(["evaluate", str(run_dir)]) == 0
        assert "1 preprocessed image of gone was gone" in " ".join(capsys.readouterr().out.split())
        assert json.loads((run_dir / "metrics.json").read_text())["model"]["test"] == before
        shutil.rmtree(cache)
        data.loc[0, "cc_crc32"] += 1  # as if the DICOM file had changed since training
        data.to_csv(run_dir / "data.csv", index=False)
        assert main(["evaluate", str(run_dir)]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "differ from those it was trained on (CC: checksums)" in out and "train --force" in out
        data.loc[0, "cc_crc32"] -= 1
        data.loc[0, "cc_path"] = str(ready / "dicom" / "gone.dcm")  # the DICOM file gone too
        data.to_csv(run_dir / "data.csv", index=False)
        shutil.rmtree(cache)
        assert main(["evaluate", str(run_dir)]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "and 1 of their DICOM files too (first: " in out and "gone.dcm" in out
        data.loc[0, "cc_path"] = str(ready / "labels.csv")  # there, but no DICOM file
        data.to_csv(run_dir / "data.csv", index=False)
        assert main(["evaluate", str(run_dir)]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "1 of its preprocessed images are gone from the cache and cannot be made again" in out
        assert "labels.csv" in out and "Traceback" not in out

    def test_a_damaged_log_of_the_hardware_does_not_stop_the_resume(self, ready, capsys):
        cfg, run_dir = interrupted_run(ready, "damaged-log")
        (run_dir / "hardware.json").write_text('[{"from epoch": 0,', encoding="utf-8")  # cut short
        train(cfg, run_dir)
        out = " ".join(capsys.readouterr().out.split())
        assert "hardware.json cannot be read: it is written anew from this session" in out
        assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1, 2, 3]
        assert [s["from epoch"] for s in json.loads((run_dir / "hardware.json").read_text())] == [1]

    def test_a_run_resumed_on_other_hardware_updates_its_weights_as_this_hardware_does(self, ready):
        """A GPU writes its optimizer with the fused kernel's flag; resumed on the CPU, the run goes on with
        the CPU's default kernel, and ends where the CPU's own uninterrupted run ends."""
        cfg, run_dir = interrupted_run(ready, "moved")
        for name in ("last", "previous"):
            path = run_dir / "checkpoints" / f"{name}.ckpt"
            if path.is_file():
                state = torch.load(path, map_location="cpu", weights_only=True)
                as_a_gpu_writes_it(state["optimizer_states"][0])
                torch.save(state, path)
        flags = OptimizerFlags()
        train(cfg, run_dir, callbacks=[flags])
        assert flags.fused == {None}
        train(cfg, ready / "work" / "runs" / "stayed")
        assert_same_last_weights(ready, "moved", "stayed")

    def test_a_run_that_averages_its_weights_resumes_to_the_uninterrupted_average(self, ready):
        """train.ema_epochs: the average and the count of its updates travel in the checkpoints."""
        preset = ready.parent / "ema.toml"
        preset.write_text(f'extends = "{ready.parent / "fast.toml"}"\n[train]\nema_epochs = 1.0\n')
        cfg, run_dir = interrupted_run(ready, "resumed", preset=preset.name)
        train(cfg, run_dir)
        train(cfg, ready / "work" / "runs" / "whole")
        assert_same_last_weights(ready, "resumed", "whole")  # the average's and the count's too
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        n_train = (pd.read_csv(run_dir / "data.csv")["split"] == "train").sum()
        assert int(state["state_dict"]["average.n_averaged"]) == 3 * -(-n_train // cfg.train.batch_size)

    def test_with_loader_processes_reading_ahead_a_resumed_run_ends_where_an_uninterrupted_one_does(
        self, ready, monkeypatch
    ):
        """Loader processes read the next epoch's batches while an epoch ends, one iterator for the whole run
        (EpochStream); a resumed run starts its loaders at the epoch it resumes from, and trains on the same
        batches, augmented alike (on the device path, drawn in this process)."""
        starts, start = [], EpochBatches.__init__

        def recorded(self, sampler, batch_size, first, *rest):
            starts.append(first)
            start(self, sampler, batch_size, first, *rest)

        monkeypatch.setattr(EpochBatches, "__init__", recorded)
        preset = ready.parent / "ahead.toml"
        preset.write_text(
            f'extends = "{ready.parent / "fast.toml"}"\n[data]\naugment = true\n[train]\nnum_workers = 2\n'
        )
        cfg, run_dir = interrupted_run(ready, "resumed", preset=preset.name)
        assert cfg.data.augment and augments_on_device(cfg)
        starts.clear()
        train(cfg, run_dir)
        assert starts == [1, 1]  # training's loader and validation's, once each, at the resumed epoch
        starts.clear()
        train(cfg, ready / "work" / "runs" / "whole")
        assert starts == [0, 0]  # not again at each epoch
        assert_same_last_weights(ready, "resumed", "whole")

    def test_on_the_loader_path_processes_and_a_resume_augment_as_one_straight_run_in_this_process(
        self, ready
    ):
        """Augmented image by image in the loader (balancing copies rotated and scaled on top), each item's
        draws come from (seed, epoch, item): 2 loader processes, interrupted and resumed, end with the
        weights of one straight run read in this process."""
        variant = '[data]\naugment = true\nbalance = "augment"\n[train]\nnum_workers = {}\n'
        for name, workers in (("processes", 2), ("here", 0)):
            (ready.parent / f"{name}.toml").write_text(
                f'extends = "{ready.parent / "fast.toml"}"\n' + variant.format(workers)
            )
        cfg, run_dir = interrupted_run(ready, "processes", preset="processes.toml")
        assert not augments_on_device(cfg)
        train(cfg, run_dir)
        here = apply_preset(load_config(ready / "cohort.toml"), str(ready.parent / "here.toml"))
        here.train.epochs = 3
        train(here, ready / "work" / "runs" / "here")
        assert_same_last_weights(ready, "processes", "here")


class OptimizerFlags(Callback):
    def __init__(self) -> None:
        self.fused: set = set()

    def on_train_epoch_start(self, trainer, module):
        self.fused |= {g["fused"] for opt in trainer.optimizers for g in opt.param_groups}


class LastCheckpointSteps(Callback):
    """Records, after every epoch (Lightning runs checkpoint callbacks last, so: at the next epoch's start
    and at the end of fit), the training step that checkpoints/last.ckpt holds and the current one."""

    def __init__(self, path):
        self.path, self.seen = path, []

    def _record(self, trainer):
        trainer.strategy.checkpoint_io.wait()  # checkpoints are written in a thread
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        self.seen.append((state["global_step"], trainer.global_step))

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_fit_end(self, trainer, module):
        self._record(trainer)


class TestCheckpointWriter:
    """Checkpoints are written in a thread (training goes on meanwhile): what lands is the state at the
    moment of saving, in order, and a failed write is not lost."""

    def test_the_file_holds_the_weights_as_they_were_when_saved_not_as_training_left_them(
        self, tmp_path, monkeypatch
    ):
        released, write = threading.Event(), TorchCheckpointIO.save_checkpoint

        def slow_disk(self, *args, **kwargs):
            released.wait(10)
            write(self, *args, **kwargs)

        monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", slow_disk)
        path = tmp_path / "last.ckpt"
        io, weights = AtomicCheckpointIO(keep={path: tmp_path / "previous.ckpt"}), torch.zeros(1000)
        io.save_checkpoint({"epoch": 0, "state_dict": {"w": weights}}, path)
        weights += 1  # the next step changes the weights in place while the write waits for the disk
        released.set()
        io.save_checkpoint({"epoch": 1, "state_dict": {"w": weights}}, path)
        io.teardown()
        last = torch.load(path, weights_only=True)
        previous = torch.load(tmp_path / "previous.ckpt", weights_only=True)
        assert previous["epoch"] == 0 and torch.equal(previous["state_dict"]["w"], torch.zeros(1000))
        assert last["epoch"] == 1 and torch.equal(last["state_dict"]["w"], torch.ones(1000))

    def test_a_failed_write_is_raised_at_the_next_checkpoint_and_leaves_the_last_one_whole(self, tmp_path):
        io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
        io.save_checkpoint({"epoch": 0}, path)
        (tmp_path / "file").write_text("")
        io.save_checkpoint({"epoch": 1}, tmp_path / "file" / "last.ckpt")  # under a file: cannot be written
        with pytest.raises(OSError):
            io.save_checkpoint({"epoch": 2}, path)
        io.teardown()
        assert torch.load(path, weights_only=True)["epoch"] == 0 and not list(tmp_path.glob(".*.tmp"))


class TestLastCheckpoint:
    def test_last_checkpoint_is_written_every_epoch_even_without_improvement(self, ready):
        cfg = apply_preset(load_config(ready / "cohort.toml"), str(ready.parent / "fast.toml"))
        cfg.train.epochs, cfg.train.lr = 4, 1e-9  # the validation AUC hardly moves: few epochs improve
        run_dir = ready / "work" / "runs" / "flat"
        probe = LastCheckpointSteps(run_dir / "checkpoints" / "last.ckpt")
        train(cfg, run_dir, callbacks=[probe])
        assert pd.read_csv(run_dir / "epochs.csv")["improved"].sum() < 4  # the case that matters is here
        assert len(probe.seen) == 4
        assert [saved for saved, _ in probe.seen] == [now for _, now in probe.seen]


class TestKeptEpoch:
    def test_with_averaged_weights_validation_and_everything_after_training_use_the_average(self, ready):
        """train.ema_epochs: the epoch log's validation AUC is the average's, the kept checkpoint (weights
        only) holds the average beside the trained weights, and evaluate scores the average: its validation
        AUC is the one logged for the kept epoch."""
        run_dir = train_variant(ready, "ema", "[train]\nema_epochs = 1.0\nepochs = 3\n")
        assert main(["evaluate", str(run_dir)]) == 0
        logged = pd.read_csv(run_dir / "epochs.csv")["val_auc"]
        assert Run(run_dir).read_evaluation().model.val_auc == pytest.approx(logged.max(), abs=1e-6)
        state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
        read = Run(run_dir).read_net().state_dict()
        averaged = [k for k in read if read[k].is_floating_point()]
        assert all(torch.equal(read[k], state[f"average.module.{k}"]) for k in averaged)
        assert not all(torch.equal(read[k], state[f"net.{k}"]) for k in averaged)  # not the trained weights
        assert main(["report", str(run_dir)]) == 0
        page = " ".join((run_dir / "report.html").read_text(encoding="utf-8").split())
        assert "Its weights are a moving average of the trained weights over about 1.0 epochs" in page

    @pytest.mark.parametrize("keep", ["best", "last"])
    def test_the_run_keeps_the_best_validation_epoch_or_the_last(self, ready, keep):
        """train.checkpoint: evaluate, explain and the bundle use the epoch of the best validation AUC (the
        study's choice) or the last one; the kept model scores the validation breasts as that epoch did.
        At this learning rate the validation AUC does not rise after the first epoch: the choices differ."""
        run_dir = train_variant(ready, keep, f'[train]\ncheckpoint = "{keep}"\nepochs = 3\nlr = 1e-9\n')
        assert main(["evaluate", str(run_dir)]) == 0
        logged = pd.read_csv(run_dir / "epochs.csv")["val_auc"]
        assert logged.idxmax() < len(logged) - 1
        kept_epoch = int(logged.idxmax()) if keep == "best" else len(logged) - 1
        assert Run(run_dir).read_evaluation().model.val_auc == pytest.approx(logged[kept_epoch], abs=1e-6)
        kept, last = (
            torch.load(run_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]
            for name in ("best", "last")
        )
        assert all(torch.equal(kept[k], last[k]) for k in kept) == (kept_epoch == len(logged) - 1)
        assert main(["report", str(run_dir)]) == 0
        said = {"best": "those breasts chose the epoch kept and the threshold", "last": "the last epoch's"}
        assert said[keep] in " ".join((run_dir / "report.html").read_text().split())


class TestRunInputs:
    def test_a_work_folder_from_before_a_setting_existed_still_matches(self, ready):
        record = ready / "work" / "cohort.toml"
        data = tomllib.loads(record.read_text())
        del data["images"]["exam_policy"], data["clinical"]["use"]  # as an older mammofuse wrote it
        record.write_text(tomli_w.dumps(data))
        cfg = load_config(ready / "cohort.toml")
        Work(cfg.work_dir).check_cohort(cfg)  # the defaults match: no error
        cfg.images.exam_policy = "earliest"
        with pytest.raises(ConfigError, match="images.exam_policy: 'latest' -> 'earliest'"):
            Work(cfg.work_dir).check_cohort(cfg)

    def test_the_work_folders_record_of_its_cohort_is_refused_as_a_config(self, ready, capsys):
        """WORK/cohort.toml holds the cohort sections alone: run as a config, its experiment settings would
        silently be the defaults (preprocessing at 1024 x 512 for a cohort configured smaller)."""
        assert main(["train", str(ready / "work" / "cohort.toml"), "--work", str(ready / "work")]) == 2
        out = " ".join(capsys.readouterr().out.split())
        assert "the work folder's record of its cohort settings, not a config" in out
        assert not (ready / "work" / "runs").exists()

    def test_a_changed_cohort_config_is_refused_with_what_differs(self, ready, capsys):
        edit_config(ready, labels={"threshold": 60.0})
        assert run(ready) == 2
        out = capsys.readouterr().out
        assert "was built from another cohort config" in out and "labels.threshold: 75.0 -> 60.0" in out
        assert not (ready / "work" / "runs" / "fast" / "checkpoints").exists()

    def test_starting_weights_that_cannot_be_read_stop_train_and_cv_before_a_run_folder(self, ready, capsys):
        damaged = ready / "damaged.pth"
        damaged.write_bytes(b"not weights")
        preset = ready / "started.toml"
        preset.write_text(f'extends = "{ready.parent / "fast.toml"}"\n[model]\npretrained = "{damaged}"\n')
        for command in ("train", "cv"):
            assert main([command, str(ready / "cohort.toml"), "--preset", str(preset), "--epochs", "1"]) == 2
            assert f"{damaged}: not a weights file torch can load" in " ".join(
                capsys.readouterr().out.split()
            )
            assert not (ready / "work" / "runs").exists() or not any((ready / "work" / "runs").iterdir())

    def test_cross_validation_folds_are_a_clear_error_for_a_single_split_run(self, ready, capsys):
        edit_config(ready, split={"folds": 3})
        assert main(["split", str(ready / "cohort.toml")]) == 0
        assert run(ready) == 2
        assert "holds 3 cross-validation folds" in capsys.readouterr().out

    def test_a_preset_with_other_preprocessing_builds_its_cache_and_reports_what_failed(self, ready, capsys):
        import pydicom

        data = pd.read_csv(ready / "work" / "preprocessed.csv", dtype={"patient_id": str})
        shared = data.loc[0, "mlo_path"]  # the copied work folder reads the session's master cohort
        damaged = str(ready.parent / "damaged.dcm")  # so this test damages a file of its own
        shutil.copy(shared, damaged)
        for name in ("manifest.csv", "preprocessed.csv"):
            table = pd.read_csv(ready / "work" / name, dtype=str, keep_default_na=False)
            table.replace({shared: damaged}).to_csv(ready / "work" / name, index=False)
        ds = pydicom.dcmread(damaged)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # claims JPEG 2000, holds raw bytes
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        ds.save_as(damaged)
        preset = ready.parent / "parity.toml"
        extra = "\n[preprocess]\nmode = 'seed_parity'\nparity_resize = 40\nparity_crop = 32\n"
        preset.write_text((ready.parent / "fast.toml").read_text() + extra)
        assert main(["train", str(ready / "cohort.toml"), "--preset", str(preset), "--epochs", "1"]) == 0
        out = capsys.readouterr().out
        assert "this run's preprocessing (seed_parity, 32x32) was not in the cache" in out
        assert "undecodable pixels" in out and damaged in out
        run_dir = ready / "work" / "runs" / "parity"
        problems = pd.read_csv(run_dir / "preprocess_problems.csv", dtype=str)
        assert problems["path"].tolist() == [damaged]
        used = pd.read_csv(run_dir / "data.csv", dtype={"patient_id": str})
        assert damaged not in set(used["mlo_path"]) and len(used) == len(data) - 1


def train_command(ready, epochs: int) -> tuple[list[str], dict[str, str]]:
    """`mammofuse train` with the demo_cpu preset as a subprocess command line, and its environment."""
    preset = ready.parent / f"demo-{epochs}.toml"
    preset.write_text(f'extends = "demo_cpu"\n[train]\nepochs = {epochs}\nbatch_size = 32\n')
    argv = [sys.executable, "-m", "mammofuse", "train", str(ready / "cohort.toml"), "--preset", str(preset)]
    return argv, {**os.environ, "MAMMOFUSE_NO_PROGRESS": "1"}


class TestFaithfulResume:
    def test_a_run_killed_at_a_random_point_resumes_to_the_uninterrupted_result(self, ready):
        """A real SIGKILL of a `mammofuse train` subprocess, then the same command again."""
        argv, env = train_command(ready, epochs=8)  # demo_cpu: shuffling, augmentation, dropout all draw
        assert subprocess.run([*argv, "--run", "whole"], env=env, capture_output=True).returncode == 0
        killed = ready / "work" / "runs" / "killed"
        proc = subprocess.Popen([*argv, "--run", "killed"], env=env, stdout=subprocess.DEVNULL)
        epochs_before_kill = random.Random().randint(1, 3)
        while (
            not (killed / "checkpoints" / "last.ckpt").is_file()  # written after epochs.csv
            or len(pd.read_csv(killed / "epochs.csv")) < epochs_before_kill
        ):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        time.sleep(random.Random().uniform(0, 0.3))  # between epochs or inside the next one
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = subprocess.run([*argv, "--run", "killed"], env=env, capture_output=True, text=True)
        assert resumed.returncode == 0 and "resuming from" in resumed.stdout
        whole = ready / "work" / "runs" / "whole"
        a, b = (
            torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
            for r in (whole, killed)
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        pd.testing.assert_frame_equal(pd.read_csv(whole / "epochs.csv"), pd.read_csv(killed / "epochs.csv"))

    def test_a_finished_run_is_left_alone_unless_forced(self, ready, capsys):
        assert run(ready) == 0
        run_dir = ready / "work" / "runs" / "fast"
        best = run_dir / "checkpoints" / "best.ckpt"
        stamp = best.stat().st_mtime_ns
        assert run(ready) == 0
        assert "finished before (2 epochs); `--force` starts it over" in capsys.readouterr().out
        assert best.stat().st_mtime_ns == stamp
        assert main(["evaluate", str(run_dir)]) == 0 and main(["samplesize", str(run_dir)]) == 0
        capsys.readouterr()
        assert run(ready, "--force") == 0
        out = capsys.readouterr().out
        assert "resuming" not in out and "epoch   2/2" in out
        # what was made from the old model goes with it: no report or bundle of a model that is gone
        assert "removed the previous model's metrics.json, predictions.csv" in out
        for name in ("metrics.json", "predictions.csv", "figures", "bundle", "samplesize.json"):
            assert not (run_dir / name).exists(), name
        assert len(json.loads((run_dir / "hardware.json").read_text())) == 1  # this session's alone
        assert main(["report", str(run_dir)]) == 2
        assert "error:" in (out := capsys.readouterr().out) and "first" in out  # evaluate it first

    def test_a_run_trained_on_data_that_changed_since_is_neither_resumed_nor_kept(self, ready, capsys):
        assert run(ready) == 0
        manifest_csv = ready / "work" / "manifest.csv"
        manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
        master = str(Path(manifest.loc[0, "cc_path"]).parents[1])  # the copied manifest reads the master's
        for view in ("cc", "mlo"):  # the export moved here and written again byte for byte
            manifest[f"{view}_path"] = manifest[f"{view}_path"].str.replace(master, str(ready / "dicom"))
        manifest.to_csv(manifest_csv, index=False)
        for path in (ready / "dicom").rglob("*.dcm"):
            os.utime(path, ns=(0, 10**18))  # another date: other cache entries, the same pixels
        assert run(ready) == 0
        out = capsys.readouterr().out
        assert "images decoded into" in out  # new entries, not the old ones read again
        assert "finished before (2 epochs)" in out  # the same data, by checksum
        splits_csv = ready / "work" / "splits.csv"
        splits = pd.read_csv(splits_csv, dtype=str)
        splits.loc[splits.index[splits["split"] == "train"][0], "split"] = "val"  # the split made again
        splits.to_csv(splits_csv, index=False)
        assert run(ready) == 2  # it used to report the old model as finished, and evaluate it
        out = " ".join(capsys.readouterr().out.split())
        assert "was trained on other data than it is given now (1 with another split" in out
        assert "`train --force`" in out and "--run NAME" in out
        assert run(ready, "--force") == 0

    def test_the_report_of_a_run_says_when_the_export_was_ingested_again_after_it(self, ready):
        assert run(ready) == 0
        run_dir = ready / "work" / "runs" / "fast"
        assert main(["evaluate", str(run_dir)]) == 0 and main(["report", str(run_dir)]) == 0
        assert "was written again after this run was trained" not in (run_dir / "report.html").read_text()
        manifest_csv = ready / "work" / "manifest.csv"
        manifest = pd.read_csv(manifest_csv, dtype=str, keep_default_na=False)
        trained = pd.read_csv(run_dir / "data.csv", dtype=str).iloc[0]
        gone = (manifest["patient_id"] == trained["patient_id"]) & (manifest["side"] == trained["side"])
        manifest[~gone].to_csv(manifest_csv, index=False)  # one of the run's breasts gone from a new ingest
        assert main(["report", str(run_dir)]) == 0
        html = " ".join((run_dir / "report.html").read_text().split())
        assert "manifest.csv was written again after this run was trained (1 breast gone)" in html

    def test_ctrl_c_says_how_to_resume_and_keeps_the_finished_epochs(self, ready):
        argv, env = train_command(ready, epochs=50)
        proc = subprocess.Popen(  # Ctrl-C heard, as in a terminal, even where this shell had us ignore it
            [*argv, "--run", "long"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        last = ready / "work" / "runs" / "long" / "checkpoints" / "last.ckpt"
        while not last.is_file():  # an epoch is finished
            assert proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
        assert "interrupted; rerun the same command to resume" in out and "Traceback" not in out
        assert torch.load(last, weights_only=True)["epoch"] >= 0  # still whole

    @pytest.mark.parametrize("inherited", [signal.default_int_handler, signal.SIG_IGN])
    def test_training_listens_for_ctrl_c_unless_started_ignoring_it(self, inherited):
        from mammofuse.training.run import CtrlC

        previous = signal.signal(signal.SIGINT, inherited)
        try:
            ctrl_c = CtrlC()
            with ctrl_c.listening():
                listening = signal.getsignal(signal.SIGINT)
            assert (listening == ctrl_c._press) == (inherited is not signal.SIG_IGN)
            assert signal.getsignal(signal.SIGINT) is inherited  # as it was
        finally:
            signal.signal(signal.SIGINT, previous)

    def test_a_ctrl_c_that_lands_where_its_exception_is_lost_still_stops_training(self, ready):
        """Python raises a Ctrl-C's KeyboardInterrupt wherever the main thread is; C code that clears errors
        (or numpy's fromfile, which replaces it) loses it there, and training went on to its last epoch.
        Training now stops at the end of the batch under way, however the signal's moment was spent."""

        class CtrlCWhereItIsLost(Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                if trainer.current_epoch == 1 and batch_idx == 0:
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(0.05)  # the signal is handled here
                    except KeyboardInterrupt:
                        pass  # lost, as in C code that clears the error

        cfg = apply_preset(load_config(ready / "cohort.toml"), str(ready.parent / "fast.toml"))
        cfg.train.epochs = 3
        run_dir = ready / "work" / "runs" / "lost"
        inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell may have us ignore it
        try:
            with pytest.raises(KeyboardInterrupt):
                train(cfg, run_dir, callbacks=[CtrlCWhereItIsLost()])
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # as before, not Lightning's
        finally:
            signal.signal(signal.SIGINT, inherited)
        assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1]  # the second epoch was cut short
        train(cfg, run_dir)
        assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1, 2, 3]  # and resumes

    def test_an_unreadable_last_checkpoint_is_set_aside_and_the_run_starts_over(self, ready, capsys):
        cfg, run_dir = interrupted_run(ready, "damaged")
        last = run_dir / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[:1000])  # what a full disk left before writes became atomic
        train(cfg, run_dir)
        out = capsys.readouterr().out
        assert "cannot be read" in out and "starting this run over" in out
        assert len(list((run_dir / "checkpoints").glob("last.ckpt.unreadable-*"))) == 1
        assert torch.load(last, weights_only=True)["epoch"] == 2
        assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # no temporary file left behind

    def test_a_damaged_last_checkpoint_resumes_from_the_epoch_before(self, ready, capsys):
        cfg, run_dir = interrupted_run(ready, "two_kept", done=2)
        checkpoints = run_dir / "checkpoints"
        assert torch.load(checkpoints / "previous.ckpt", weights_only=True)["epoch"] == 0
        last = checkpoints / "last.ckpt"
        last.write_bytes(last.read_bytes()[:1000])
        train(cfg, run_dir)
        out = capsys.readouterr().out
        assert "last.ckpt cannot be read" in out and "previous.ckpt (1 of 3 epochs done)" in out
        assert len(list(checkpoints.glob("last.ckpt.unreadable-*"))) == 1
        assert pd.read_csv(run_dir / "epochs.csv")["epoch"].tolist() == [1, 2, 3]
        assert torch.load(last, weights_only=True)["epoch"] == 2


class TestInputPipeline:
    def test_augmenting_whole_batches_on_the_device_trains_like_the_loader_path(self, ready):
        run = train_variant(ready, "device", '[data]\naugment = true\n[train]\naugment_on = "device"\n')
        epochs = pd.read_csv(run / "epochs.csv")
        assert (
            len(epochs) == 2 and epochs["train_loss"].notna().all() and epochs["val_auc"].between(0, 1).all()
        )

    @pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # a step without a Trainer
    @pytest.mark.parametrize("fusion", ["concat", "mlp", "late"])
    def test_a_whole_image_training_step_never_makes_the_cpu_wait_for_a_gpu(self, fusion):
        """The CPU's check of what tests/training/test_gpu.py checks on a GPU: the issue's network (two
        resnet18s) with auxiliary heads, a training step, its backward pass and a validation step on the
        meta device. (The patch model finds its breast tiles from the data: one wait per view, on purpose;
        tests/models/test_tiles.py counts it.)"""
        model = ModelConfig(backbone="resnet18", pretrained="none", fusion=fusion)
        module, batch = step_module(model, "meta"), step_batch(4, "meta")
        with FromTheCpu() as watch:
            module.training_step(batch, 0).backward()
            module.validation_step(batch, 0)
        assert watch.ops == [] and len(module._train) == len(module._val) == 1

    def test_an_update_of_the_weights_average_never_makes_the_cpu_wait_for_a_gpu(self):
        """train.ema_epochs, after every optimiser step, on the meta device (torch's AveragedModel reads its
        update count back twice an update; here the count is kept on the host)."""
        model = ModelConfig(backbone="resnet18", pretrained="none")
        module = step_module(model, "meta", TrainConfig(ema_epochs=1.0))
        with FromTheCpu() as watch:
            for _ in range(3):
                module.on_train_batch_end(None, {}, 0)
        assert watch.ops == [] and module.updates == 3

    def test_a_real_training_step_reads_nothing_back_from_its_tensors(self, ready):
        """A whole `train` under Lightning (its loop, precision plugin, logging, callbacks; the batch
        augmentation, mlp fusion, an auxiliary head): nothing between a batch's start and its end reads a
        tensor's value on the host, which on a GPU would wait for the queued work. Per epoch it may."""
        reads = HostReads()

        class Steps(Callback):
            steps = 0

            def on_train_batch_start(self, *_):
                reads.counting = True

            def on_train_batch_end(self, *_):
                reads.counting, self.steps = False, self.steps + 1

        cfg = apply_preset(load_config(ready / "cohort.toml"), str(ready.parent / "fast.toml"))
        cfg.data.augment, cfg.train.augment_on = True, "device"
        cfg.model.fusion, cfg.model.auxiliary = "mlp", {"her2": 0.3}
        steps = Steps()
        with reads:
            train(cfg, ready / "work" / "runs" / "reads", callbacks=[steps])
        assert steps.steps >= 4 and reads.reads == 0

    def test_the_precision_a_gpu_picks_trains_a_patch_model_with_every_head_and_evaluates(self, ready):
        """bf16 autocast (what `auto` picks on a GPU) on the CPU: the patch model's tile selection and
        attention, the mlp fusion and an auxiliary head all mix bf16 activations with fp32 buffers."""
        variant = '[model]\nkind = "patches"\ntile = 32\nfusion = "mlp"\nauxiliary = {her2 = 0.3}\n'
        run = train_variant(ready, "bf16", variant + '[train]\nprecision = "bf16-mixed"\n', "--epochs", "1")
        (session,) = json.loads((run / "hardware.json").read_text())
        assert session["precision"] == "bf16-mixed"
        assert pd.read_csv(run / "epochs.csv")["train_loss"].notna().all()
        assert main(["evaluate", str(run)]) == 0
        auc = json.loads((run / "metrics.json").read_text())["model"]["test"]["auc"]
        assert auc["low"] <= auc["auc"] <= auc["high"]

    def test_compiled_training_runs_each_batch_size_on_a_graph_made_for_it_and_evaluates_like_any_run(
        self, ready, monkeypatch
    ):
        """`train.compile` compiles what the training and validation steps run. An epoch's last batch is
        partial (175 training breasts in batches of 32; 19 validation breasts): it gets a graph of its own,
        and the full batches after it go on running theirs (the compiler would otherwise meet it with a graph
        for any batch size and run every later batch on that). The graphs run as traced here (a recording
        backend instead of inductor's code generation, a minute on this machine; tests/training/test_gpu.py
        compiles for real)."""
        graphs: list[bool] = []  # per graph compiled: whether it takes any batch size

        def recording(graph, inputs):
            graphs.append(any(isinstance(x, torch.SymInt) for x in inputs))  # a free size comes as an input
            return graph.forward

        compile_ = torch.compile
        monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend=recording, **kw))
        torch._dynamo.reset()  # no graph left from another test's network
        try:
            run = train_variant(ready, "compiled", "[train]\ncompile = true\n")  # two epochs
        finally:
            torch._dynamo.reset()
        assert len(graphs) >= 2 and not any(graphs)  # training and validation at least, none for any size
        state = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
        assert not any("_orig_mod" in k for k in state)  # the weights keep their names
        assert main(["evaluate", str(run)]) == 0


def test_the_weights_average_forgets_the_random_start_within_its_horizon():
    """EmaStep: a weight that jumps from 0 to 1 and stays there. A plain moving average over a horizon of
    10 steps would still hold 35 % of the start after 10 steps; the warm-up leaves a few percent, and
    after many steps the average is the weight."""
    from mammofuse.training.module import EmaStep

    step = EmaStep(epochs=1.0)
    step.steps_per_epoch = 10
    net = torch.nn.Linear(1, 1, bias=False)
    average = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
        average.weight.fill_(5.0)
    step(average, net, 0)  # the first update copies: 0
    assert float(average.weight.detach()) == 0.0
    with torch.no_grad():
        net.weight.fill_(1.0)
    seen = []
    for n in range(1, 61):
        step(average, net, n)
        seen.append(float(average.weight.detach()))
    assert 1 - seen[9] < 0.05 < 1 - 0.9**10  # 35 %
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0, abs=1e-2)
