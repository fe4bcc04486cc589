import re
import tomllib

import optuna
import pandas as pd
import pytest
from lightning.pytorch.callbacks import Callback

from mammofuse.cli import main
from mammofuse.config import ConfigError, settings_text
from mammofuse.storage import locked
from mammofuse.training.run import kept_val_auc
from mammofuse.tuning import tune as tuning
from mammofuse.tuning.tune import TrialSeeded, read_space, resume_interrupted


def tune(cohort, *extra, epochs: int = 1) -> int:
    config = str(cohort / "cohort.toml")
    return main(
        ["tune", config, "--preset", str(cohort.parent / "fast.toml"), "--epochs", str(epochs), *extra]
    )


def finished(cohort, name: str) -> list[tuple[dict, float]]:
    """(settings, validation AUC) of the study's finished trials, in order."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cohort / 'work' / 'tune.db'}")
    return [(t.params, t.value) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


class PowerCut(BaseException):
    """The process dies: no handler runs, so the trial is left RUNNING in the study (as by kill -9)."""


def stop_after_one_epoch(monkeypatch, folder: str, stop: type[BaseException]) -> None:
    """tune's trial training in `folder` stops after its first epoch (checkpointed) with `stop`: the
    KeyboardInterrupt that `fit` raises on Ctrl-C, or a PowerCut."""
    real = tuning.fit

    class Stop(Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:
                raise RuntimeError("stop")

    def fit(cfg, run, *args, callbacks=(), **kwargs):
        if run.dir.name != folder:
            return real(cfg, run, *args, callbacks=callbacks, **kwargs)
        with pytest.raises(RuntimeError, match="stop"):
            real(cfg, run, *args, callbacks=[*callbacks, Stop()], **kwargs)
        raise stop()

    monkeypatch.setattr(tuning, "fit", fit)


class TestTune:
    def test_trials_never_see_the_test_split_and_the_best_is_a_preset(self, ready, capsys):
        assert tune(ready, "--trials", "2") == 0
        folder = ready / "work" / "runs" / "fast-tune"
        splits = pd.read_csv(ready / "work" / "splits.csv", dtype={"patient_id": str})
        test_patients = set(splits.loc[splits["split"] == "test", "patient_id"])
        for trial in ("trial-000", "trial-001"):
            data = pd.read_csv(folder / trial / "data.csv", dtype={"patient_id": str})
            assert set(data["split"]) == {"train", "val"} and not test_patients & set(data["patient_id"])
        best = tomllib.loads((folder / "best.toml").read_text())
        assert best["extends"].endswith("fast.toml") and {"lr", "weight_decay"} <= set(best["train"])
        out = capsys.readouterr().out  # each trial's settings whole (a rule's title was cut to 80 columns)
        assert all(f"\n{settings_text(settings)}\n" in out for settings, _ in finished(ready, "fast-tune"))
        shown = " ".join(out.split())  # the baseline beside the best trial, on its validation breasts
        assert re.search(
            r"clinical only, on the same validation breasts: AUC (0|1)\.\d{3} \(one regression", shown
        )
        assert (
            main(
                ["train", str(ready / "cohort.toml"), "--preset", str(folder / "best.toml"), "--epochs", "1"]
            )
            == 0
        )

    def test_an_interrupted_study_goes_on_in_its_database(self, ready, capsys):
        assert tune(ready, "--trials", "1") == 0
        assert tune(ready, "--trials", "3") == 0
        assert "1 trial finished before, going on" in capsys.readouterr().out
        study = optuna.load_study(study_name="fast-tune", storage=f"sqlite:///{ready / 'work' / 'tune.db'}")
        assert len(study.trials) == 3
        assert len({str(t.params) for t in study.trials}) == 3  # the second run used to draw trial 0's again


def test_a_trial_is_scored_by_the_validation_auc_of_the_epoch_it_keeps():
    epochs = pd.DataFrame({"epoch": [1, 2, 3], "val_auc": [0.6, 0.8, 0.7]})
    assert (kept_val_auc(epochs, "best"), kept_val_auc(epochs, "last")) == (0.8, 0.7)


class TestInterrupted:
    def test_an_interrupted_trial_goes_on_from_its_checkpoint(self, ready, monkeypatch, capsys):
        assert tune(ready, "--trials", "3", "--run", "straight", epochs=2) == 0
        stop_after_one_epoch(monkeypatch, "trial-001", PowerCut)  # its process dies in trial 1
        with pytest.raises(PowerCut):
            tune(ready, "--trials", "3", "--run", "stopped", epochs=2)
        monkeypatch.undo()
        capsys.readouterr()
        # the retry of trial 1 is trial 2, so the next new trial is 3: Ctrl-C there
        stop_after_one_epoch(monkeypatch, "trial-003", KeyboardInterrupt)
        assert tune(ready, "--trials", "3", "--run", "stopped", epochs=2) == 130
        out = " ".join(capsys.readouterr().out.split())
        assert "trial 1 was stopped before it finished: it goes on from its last checkpoint" in out
        assert "trial 2 (trial 1 goes on)" in out and "(1 of 2 epochs done)" in out
        monkeypatch.undo()
        assert tune(ready, "--trials", "3", "--run", "stopped", epochs=2) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert "trial 3 was stopped before it finished" in out and "(1 of 2 epochs done)" in out
        straight = finished(ready, "straight")
        assert finished(ready, "stopped") == straight  # the resumed study drew what the straight one drew
        assert len({str(settings) for settings, _ in straight}) == 3
        runs = ready / "work" / "runs"
        for trial, retry in (("trial-001", "trial-001"), ("trial-002", "trial-003")):  # each trial's folder
            pd.testing.assert_frame_equal(
                pd.read_csv(runs / "straight" / trial / "epochs.csv"),
                pd.read_csv(runs / "stopped" / retry / "epochs.csv"),
            )

    def test_a_running_trial_is_left_to_its_process_while_it_lives(self, tmp_path):
        study = optuna.create_study(direction="maximize", sampler=TrialSeeded(0))
        first, second = study.ask(), study.ask()  # two processes, side by side
        first.suggest_float("lr", 1e-4, 1e-2)
        second.suggest_float("lr", 1e-4, 1e-2)
        assert first.params != second.params  # not the same draw twice
        for trial in (first, second):
            (tmp_path / f"trial-{trial.number:03d}").mkdir()
        with locked(tmp_path / "trial-000", "tune trial 0"):
            assert resume_interrupted(study, tmp_path) == [1]  # trial 1's process is gone
        assert study.trials[0].state == optuna.trial.TrialState.RUNNING
        assert resume_interrupted(study, tmp_path) == [0]  # its lock is free now: it died
        assert resume_interrupted(study, tmp_path) == []  # each queued once
        for trial in (second, first):  # in the order they were queued
            retry = study.ask()
            retry.suggest_float("lr", 1e-4, 1e-2)
            assert (retry.params, retry.user_attrs) == (trial.params, {"resumes": trial.number})

    def test_a_trial_whose_process_died_before_making_its_folder_gives_its_place_to_a_new_one(self, tmp_path):
        study = optuna.create_study(direction="maximize", sampler=TrialSeeded(0))
        study.ask()  # asked, then kill -9 before its run folder was made
        assert resume_interrupted(study, tmp_path) == []  # another machine's, perhaps: left to it
        assert study.trials[0].state == optuna.trial.TrialState.RUNNING
        assert (
            resume_interrupted(study, tmp_path, shared_folder=True) == []
        )  # nothing trained, nothing to resume
        assert study.trials[0].state == optuna.trial.TrialState.FAIL  # no longer counted as started


class TestBadInput:
    def test_an_unreachable_storage_is_one_clear_line(self, ready, capsys):
        assert tune(ready, "--trials", "1", "--storage", "sqlite:////nonexistent/dir/tune.db") == 2
        out = capsys.readouterr().out
        assert "--storage sqlite:////nonexistent/dir/tune.db: cannot open the study" in out
        assert "Traceback" not in out and not (ready / "work" / "runs" / "fast-tune").exists()

    def test_a_damaged_study_database_in_the_work_folder_is_named_as_that_file(self, ready, capsys):
        database = ready / "work" / "tune.db"
        database.write_text("not a database: a file written over it")
        assert tune(ready, "--trials", "1") == 2
        out = " ".join(capsys.readouterr().out.split())
        assert f"{database} (the work folder's studies; move it aside to start them afresh)" in out
        assert "--storage" not in out and "Traceback" not in out

    @pytest.mark.parametrize(
        "text, refused",
        [
            (
                "[train.lrr]\nlow = 0.001\nhigh = 0.01\n",
                r"train.lrr is not a setting \(known in \[train\]: epochs",
            ),
            ("[split.seed]\nlow = 0\nhigh = 3\n", r"\[split\] cannot be tuned"),
            ("[train.lr]\nlow = 0.1\nhigh = 0.0001\n", r"train.lr: low 0.1 is above high 0.0001 \(a range"),
            (
                "[train.lr]\nlow = 0\nhigh = 0.1\nlog = true\n",
                r"train.lr: a log range needs low above 0 \(found 0\)",
            ),
        ],
    )
    def test_a_search_space_that_cannot_be_drawn_from_is_refused_at_reading(self, tmp_path, text, refused):
        space = tmp_path / "space.toml"
        space.write_text(text)
        with pytest.raises(ConfigError, match=refused):  # the last two: optuna's traceback at the first draw
            read_space(space)

    def test_a_draw_its_setting_refuses_stops_the_command_before_any_trial(self, ready, capsys):
        space = ready / "space.toml"
        space.write_text('[model.dropout]\nchoices = [0.1, 1.5]\n[data.balance]\nchoices = ["none"]\n')
        assert tune(ready, "--trials", "1", "--space", str(space)) == 2  # dropout 1.5 was drawn at a trial
        out = " ".join(capsys.readouterr().out.split())
        assert "space.toml: model.dropout can draw 1.5: Input should be less than" in out
        assert (
            not (ready / "work" / "runs" / "fast-tune").exists() and not (ready / "work" / "tune.db").exists()
        )

    def test_starting_weights_a_trial_can_draw_are_read_before_the_first_trial(self, ready, capsys):
        damaged = ready / "damaged.pth"
        damaged.write_bytes(b"not weights")
        space = ready / "space.toml"
        space.write_text(f'[model.pretrained]\nchoices = ["none", "{damaged}"]\n')
        assert tune(ready, "--trials", "2", "--space", str(space)) == 2  # was: the second trial's draw
        shown = " ".join(capsys.readouterr().out.split())
        assert "space.toml: a trial can draw model.backbone = 'tiny_cnn' with model.pretrained = " in shown
        assert f"{damaged}: not a weights file torch can load" in shown
        assert not (ready / "work" / "runs" / "fast-tune").exists()

    def test_the_default_space_is_valid(self):
        assert {"train.lr", "model.dropout", "data.balance"} <= set(read_space())


class TestPruning:
    def test_a_hopeless_trial_is_stopped_by_the_callback(self):
        from types import SimpleNamespace

        import torch

        from mammofuse.tuning.tune import Pruning

        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.9))
        trial = study.ask()
        trainer = SimpleNamespace(
            callback_metrics={"val_auc": torch.tensor(0.6)}, sanity_checking=False, current_epoch=2
        )
        with pytest.raises(optuna.TrialPruned, match="validation AUC 0.600 at epoch 3"):
            Pruning(trial).on_validation_end(trainer, None)
        trainer.callback_metrics["val_auc"] = torch.tensor(0.95)
        Pruning(study.ask()).on_validation_end(trainer, None)  # a good one goes on
