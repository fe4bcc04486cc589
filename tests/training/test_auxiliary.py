"""Auxiliary targets: clinical columns predicted from the images as extra training targets."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mammofuse.cli import main
from mammofuse.config import ConfigError, TrainConfig, parse_config
from mammofuse.data.clinical import AuxiliaryTargets
from mammofuse.runs import Run
from mammofuse.training.module import BreastClassifier
from tests.models.test_tiles import patch_net
from tests.training.fixtures import train_variant


class TestConfig:
    @pytest.mark.parametrize(
        ("auxiliary", "says"),
        [
            ({"hair_colour": 0.3}, "'hair_colour' is not a clinical column"),
            ({"her2": 0.0}, "must be positive"),
        ],
    )
    def test_a_target_that_is_not_a_clinical_column_or_has_no_weight_is_refused(self, auxiliary, says):
        with pytest.raises(ConfigError, match=says):
            parse_config({"model": {"auxiliary": auxiliary}})


class TestTargets:
    def test_categories_and_scales_come_from_the_training_rows_and_missing_is_nan(self):
        train = pd.DataFrame({"her2": ["positive", "negative", None], "ki67": [10, 20, 30]})
        aux = AuxiliaryTargets.fit(train, {"her2": 0.5, "ki67": 0.2}, numeric=["ki67"])
        assert aux.categories == {"her2": ["negative", "positive"]} and aux.outputs("her2") == 2
        assert aux.outputs("ki67") == 1
        new = pd.DataFrame({"her2": ["positive", "equivocal", None], "ki67": [20, None, 40]})
        y = aux.transform(new)
        assert y[0, 0] == 1 and np.isnan(y[1, 0]) and np.isnan(y[2, 0])  # unseen category: unknown
        assert y[0, 1] == 0 and np.isnan(y[1, 1]) and y[2, 1] == pytest.approx(20 / np.std([10, 20, 30]))

    def test_the_loss_counts_known_targets_only_and_reaches_the_image_encoder(self):
        aux = AuxiliaryTargets(
            {"her2": 1.0, "ki67": 0.5}, categories={"her2": ["n", "p"]}, means={"ki67": 0.0}
        )
        module = BreastClassifier(patch_net(), TrainConfig(), aux)
        x = torch.rand(3, 1, 64, 64)
        _, features = module.net.scores(x, x, torch.zeros(3, 3))
        unknown = torch.full((3, 2), float("nan"))
        assert module.auxiliary_loss(features, unknown) == 0
        targets = torch.tensor([[1.0, 0.3], [float("nan"), -1.0], [0.0, float("nan")]])
        loss = module.auxiliary_loss(features, targets)
        her2, ki67 = module.auxiliary[0](features[[0, 2]]), module.auxiliary[1](features[[0, 1]])[:, 0]
        expected = F.cross_entropy(her2, torch.tensor([1, 0])) + 0.5 * F.mse_loss(
            ki67, torch.tensor([0.3, -1.0])
        )
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)  # the mean over the known ones
        loss.backward()
        assert loss > 0 and module.net.backbone_parameters()[0].grad.abs().sum() > 0


class TestTraining:
    def test_a_run_with_an_auxiliary_target_leaves_it_out_of_the_inputs(self, ready, capsys):
        run = Run(train_variant(ready, "aux", "[model]\nauxiliary = {her2 = 0.5, age = 0.2}\n"))
        features = run.read_encoder().feature_names
        assert not any(f.startswith(("her2", "age")) for f in features) and "ki67" in features
        state = torch.load(run.checkpoint("best"), weights_only=True)["state_dict"]
        assert state["auxiliary.0.weight"].shape[0] == 2 and state["auxiliary.1.weight"].shape[0] == 1
        assert main(["evaluate", str(run.dir)]) == 0  # the network alone, without its training heads
        assert json.loads(run.metrics.read_text())["model"]["test"]["auc"]["auc"] > 0
