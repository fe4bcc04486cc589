import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, View
from mammofuse.explain.explain import case_from_row, check_run, explain_breast, on_originals, select_cases
from mammofuse.explain.gradcam import OneView, gradcam
from mammofuse.models import create_model
from mammofuse.runs import Run


class TestGradcam:
    def test_maps_have_the_image_shape_and_go_back_to_the_original(self, trained_master):
        run = Run(trained_master)
        data, encoder, net = run.read_data(), run.read_encoder(), run.read_net()
        case = case_from_row(data.iloc[0], [encoder.transform(data.iloc[[0]])[0]])
        cams, attention = explain_breast([net], case.read_images(), case.clinical)
        original, back = on_originals(case, cams, voi=True)
        assert attention is None  # a whole-image model
        for view in VIEWS:
            assert cams[view].shape == case.read_images()[view].shape
            assert cams[view].min() >= 0 and cams[view].max() <= 1
            assert back[view].shape == original[view].shape

    @pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0", "convnext_tiny"])
    def test_maps_are_not_constant(self, backbone):
        torch.manual_seed(0)
        net = create_model(ModelConfig(backbone=backbone, pretrained="none"), 3)
        yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(64.0), indexing="ij")
        img = (((yy - 40) ** 2 + (xx - 30) ** 2) < 100).float()[None, None] * 0.8 + 0.1  # (1, 1, 128, 64)
        maps = gradcam(net, img, img.clone(), torch.zeros(1, 3))
        for view in VIEWS:
            assert maps[view].shape == (1, 128, 64) and maps[view].std() > 0.01

    def test_the_wrapper_scores_like_the_whole_network(self, trained_master):
        run = Run(trained_master)
        encoder, net = run.read_encoder(), run.read_net()
        torch.manual_seed(0)
        cc, mlo = torch.rand(2, 1, 64, 32), torch.rand(2, 1, 64, 32)
        clinical = torch.rand(2, len(encoder.feature_names))
        with torch.no_grad():
            full = net(cc, mlo, clinical)
            assert torch.allclose(OneView(net, View.CC, mlo, clinical)(cc), full, atol=1e-5)
            assert torch.allclose(OneView(net, View.MLO, cc, clinical)(mlo), full, atol=1e-5)


class TestSelectCases:
    def test_picks_extremes_and_the_largest_errors(self):
        pred = pd.DataFrame({"label": [0, 0, 1, 1, 0, 1], "probability": [0.9, 0.1, 0.8, 0.05, 0.6, 0.4]})
        cases = select_cases(pred, threshold=0.5, n=1)
        assert cases == [("highest", 0), ("lowest", 3), ("false-positive", 0), ("false-negative", 3)]


class TestExplainCommand:
    def test_writes_overlays_named_by_row_number(self, trained_master, tmp_path, capsys):
        import shutil

        run = tmp_path / "run"
        shutil.copytree(trained_master, run)
        assert main(["explain", str(run), "--n", "1"]) == 0
        index = pd.read_csv(run / "explain" / "index.csv")
        assert len(index) >= 2 and all((run / "explain" / f).stat().st_size > 5000 for f in index["file"])
        assert not any("MF" in f for f in index["file"])  # no patient IDs in names


@pytest.mark.slow
class TestGradcamOnALearnedSignal:
    def test_more_mass_on_the_planted_calcifications_than_on_the_background(self, tmp_path):
        """Train the demo's small CNN on a synthetic cohort, then ask where it looks (about 3 minutes)."""
        from tests.training.fixtures import prepare

        cohort = prepare(tmp_path, breasts=600, seed=21, size=(192, 156))
        config = str(cohort / "cohort.toml")
        assert main(["train", config, "--preset", "demo_cpu", "--epochs", "12"]) == 0
        run = Run(cohort / "work" / "runs" / "demo_cpu")
        assert main(["evaluate", str(run.dir)]) == 0
        cfg, encoder, net = run.read_config(), run.read_encoder(), run.read_net()
        truth = pd.read_csv(cohort / "truth.csv", dtype={"patient_id": str})
        data = run.read_data().merge(truth, on=["patient_id", "side", "label"], suffixes=("", "_truth"))
        positives = data[(data["split"] == "test") & (data["label"] == 1)].head(12)
        ratios = []
        for i, row in positives.iterrows():
            case = case_from_row(row, [encoder.transform(data.loc[[i]])[0]])
            cams, _ = explain_breast([net], case.read_images(), case.clinical)
            original, back = on_originals(case, cams, cfg.preprocess.voi == "window")
            for view in VIEWS:
                key = view.value.lower()
                cam, img = back[view], original[view]
                yy, xx = np.mgrid[: cam.shape[0], : cam.shape[1]]
                radius = max(row[f"{key}_radius"], 6.0)
                lesion = np.hypot(yy - row[f"{key}_y"], xx - row[f"{key}_x"]) <= radius
                breast = (img > 0.15) & ~lesion
                ratios.append(cam[lesion].mean() / max(cam[breast].mean(), 1e-6))
        assert np.median(ratios) > 1.5
        # The same through explain's checks, over every test breast: the maps point at the tumour far more
        # often than chance and than a network with random weights, and change when the weights are random.
        summary = check_run(run.dir, cohort / "lesions.csv")
        positive = next(g for g in summary["localisation"]["groups"] if g["name"] == "EIC positive")
        assert positive["hit"][1] > 2 * positive["area_share"][2]  # the interval's low end, chance's high end
        assert positive["hit"][0] > positive["redrawn_hit"][0] + 0.2
        assert positive["energy_share"][1] > positive["area_share"][2]
        assert summary["randomisation"]["median"] < 0.5
