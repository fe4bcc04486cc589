import urllib.error

import pytest
import torch
import torchvision

from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, View
from mammofuse.models import ModelError, create_backbone, create_model, describe
from mammofuse.registry import BACKBONES


class TestFactory:
    @pytest.mark.parametrize("name", BACKBONES)
    def test_every_backbone_gives_two_logits_and_a_feature_layer(self, name):
        net = create_model(ModelConfig(backbone=name, pretrained="none"), n_clinical=5).eval()
        x = torch.rand(2, 1, 64, 64)
        seen = []
        hook = net.backbone(View.CC).target_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        assert net(x, x, torch.rand(2, 5)).shape == (2, 2)
        hook.remove()
        assert len(seen) == 1 and len(seen[0]) == 4  # a (B, C, h, w) feature map

    def test_grey_input_can_adapt_the_first_convolution(self):
        backbone = create_backbone("resnet18", grey="adapt")
        assert backbone.body[0].in_channels == 1
        assert backbone(torch.rand(1, 1, 64, 64)).shape[1] == 512

    def test_views_have_separate_weights_unless_shared(self):
        separate = create_model(ModelConfig(backbone="tiny_cnn", pretrained="none"), 0)
        shared = create_model(ModelConfig(backbone="tiny_cnn", pretrained="none", shared_backbone=True), 0)
        assert separate.backbone(View.CC) is not separate.backbone(View.MLO)
        assert shared.backbone(View.CC) is shared.backbone(View.MLO)

    def test_clinical_mlp_and_dropout_are_options(self):
        net = create_model(
            ModelConfig(backbone="tiny_cnn", pretrained="none", clinical_hidden=8, dropout=0.5), 3
        )
        assert net.head.in_features == 2 * 128 + 8 and net.dropout.p == 0.5

    def test_mlp_fusion_puts_both_branches_on_one_scale(self):
        torch.manual_seed(0)
        net = create_model(ModelConfig(backbone="tiny_cnn", pretrained="none", fusion="mlp"), 3).eval()
        x = torch.rand(4, 1, 64, 32)
        pooled = [net.view_features(v, x) for v in VIEWS]
        features = net.fused(pooled, net.clinical(100 * torch.randn(4, 3)))  # clinical on another scale
        image, clinical = features[:, :256], features[:, 256:]
        assert clinical.shape[1] == 16  # through the default MLP
        for branch in (image, clinical):  # each normalised per breast
            torch.testing.assert_close(branch.mean(1), torch.zeros(4), atol=1e-4, rtol=0)


class TestDescription:
    """What the model card and the report say the network is: it must match the config, not one default."""

    @pytest.mark.parametrize(
        ("model", "says", "never"),
        [
            ({}, ["on each whole view", "one backbone per view", "side by side"], ["tiles", "logistic"]),
            ({"kind": "patches", "tile": 64, "fusion": "mlp"}, ["64-pixel tiles", "attention", "MLP"], []),
            ({"fusion": "late", "shared_backbone": True}, ["shared", "logistic regression"], []),
            ({"auxiliary": {"her2": 0.3}}, ["her2 (weight 0.3)", "not inputs"], []),
        ],
    )
    def test_says_what_the_config_builds(self, model, says, never):
        text = describe(ModelConfig(backbone="resnet18", pretrained="none", **model))
        assert all(s in text for s in says) and not any(n in text for n in never), text


class TestPretrainedWeights:
    def test_a_local_weights_file_is_loaded(self, tmp_path):
        torch.manual_seed(7)
        source = torchvision.models.resnet18(weights=None)
        path = tmp_path / "resnet18-local.pth"
        torch.save(source.state_dict(), path)
        backbone = create_backbone("resnet18", pretrained=str(path))
        assert torch.equal(backbone.body[0].weight, source.conv1.weight)
        assert torch.equal(backbone.body[7][1].conv2.weight, source.layer4[1].conv2.weight)

    def test_a_file_of_another_network_is_a_clear_error(self, tmp_path):
        path = tmp_path / "wrong.pth"
        torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
        with pytest.raises(ModelError, match="not resnet50 weights"):
            create_backbone("resnet50", pretrained=str(path))

    def test_a_missing_file_is_a_clear_error(self, tmp_path):
        with pytest.raises(ModelError, match="not found"):
            create_backbone("resnet18", pretrained=str(tmp_path / "nope.pth"))

    def test_imagenet_offline_is_a_clear_error_never_a_random_start(self, tmp_path, monkeypatch):
        monkeypatch.setenv("TORCH_HOME", str(tmp_path))

        def offline(*args, **kwargs):
            raise urllib.error.URLError("no network")

        monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
        with pytest.raises(ModelError) as err:
            create_backbone("resnet18", pretrained="imagenet")
        assert "cannot be downloaded" in str(err.value) and "local weights file" in str(err.value)
