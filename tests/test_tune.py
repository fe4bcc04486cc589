import tomllib

import optuna
import pandas as pd
import pytest

from mammofuse.cli import main
from mammofuse.config import ConfigError
from mammofuse.tuning.tune import read_space


def tune(cohort, *extra) -> int:
    config = str(cohort / "cohort.toml")
    return main(["tune", config, "--preset", str(cohort.parent / "fast.toml"), "--epochs", "1", *extra])


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
        assert (
            main(
                ["train", str(ready / "cohort.toml"), "--preset", str(folder / "best.toml"), "--epochs", "1"]
            )
            == 0
        )

    def test_an_interrupted_study_goes_on_in_its_database(self, ready, capsys):
        assert tune(ready, "--trials", "1") == 0
        assert tune(ready, "--trials", "3") == 0
        assert "1 trials finished before, going on" in capsys.readouterr().out
        study = optuna.load_study(study_name="fast-tune", storage=f"sqlite:///{ready / 'work' / 'tune.db'}")
        assert len(study.trials) == 3


class TestBadInput:
    def test_an_unreachable_storage_is_one_clear_line(self, ready, capsys):
        assert tune(ready, "--trials", "1", "--storage", "sqlite:////nonexistent/dir/tune.db") == 2
        out = capsys.readouterr().out
        assert "--storage sqlite:////nonexistent/dir/tune.db: cannot open the study" in out
        assert "Traceback" not in out and not (ready / "work" / "runs" / "fast-tune").exists()

    def test_a_search_space_key_that_does_not_exist(self, tmp_path):
        space = tmp_path / "space.toml"
        space.write_text("[train.lrr]\nlow = 0.001\nhigh = 0.01\n")
        with pytest.raises(ConfigError, match=r"train.lrr is not a setting \(known in \[train\]: epochs"):
            read_space(space)
        space.write_text("[split.seed]\nlow = 0\nhigh = 3\n")
        with pytest.raises(ConfigError, match=r"\[split\] cannot be tuned"):
            read_space(space)

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
