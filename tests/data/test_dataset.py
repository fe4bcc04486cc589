import numpy as np
import pandas as pd
import pytest
import torch

from mammofuse.cli import main
from mammofuse.config import DataConfig, ModelConfig, TrainConfig, load_config
from mammofuse.data.balance import (
    BatchAugmentation,
    ClassBalancedSampler,
    EpochShuffle,
    balanced_order,
    standard_augmentation,
)
from mammofuse.data.dataset import build_datasets
from mammofuse.models import create_model
from mammofuse.problems import DataError
from mammofuse.training.module import BreastClassifier
from tests.waits import FromTheCpu

LABELS = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]  # the GPU path where there is one


class TestBalancing:
    def test_none_serves_every_row_once(self):
        order, strong = balanced_order(LABELS, DataConfig(balance="none"), np.random.default_rng(0))
        assert sorted(order) == list(range(10)) and not strong.any()

    def test_copy_repeats_positives_k_times(self):
        order, strong = balanced_order(LABELS, DataConfig(balance="copy", copies=3), np.random.default_rng(0))
        counts = np.bincount(order, minlength=10)
        assert counts[0] == counts[4] == 3 and (counts[LABELS == 0] == 1).all() and not strong.any()

    def test_augment_adds_rotated_positives_up_to_balance(self):
        order, strong = balanced_order(LABELS, DataConfig(balance="augment"), np.random.default_rng(0))
        assert (LABELS[order] == 1).sum() == (LABELS[order] == 0).sum() == 8
        assert strong.sum() == 6 and (LABELS[order[strong]] == 1).all()

    def test_sampler_draws_classes_evenly_and_is_seeded(self):
        draws = list(ClassBalancedSampler(np.tile(LABELS, 100), seed=0))
        again = list(ClassBalancedSampler(np.tile(LABELS, 100), seed=0))
        assert draws == again
        assert np.mean(np.tile(LABELS, 100)[draws]) == pytest.approx(0.5, abs=0.06)

    @pytest.mark.parametrize(
        "make", [lambda: EpochShuffle(50, seed=3), lambda: ClassBalancedSampler(LABELS, seed=3)]
    )
    def test_each_epoch_draws_anew_and_the_same_epoch_draws_the_same(self, make):
        sampler, fresh = make(), make()
        sampler.set_epoch(1)
        first = list(sampler)
        sampler.set_epoch(2)
        assert list(sampler) != first
        fresh.set_epoch(1)  # a resumed run, set straight to epoch 1
        assert list(fresh) == first


@pytest.fixture
def prepared(tiny_cohort):
    config = str(tiny_cohort / "cohort.toml")
    work = tiny_cohort / "work"
    for argv in (
        ["ingest", config, "--out", str(work)],
        ["preprocess", config, "--work", str(work), "--workers", "1"],
        ["split", config, "--work", str(work)],
    ):
        assert main(argv) == 0
    cfg = load_config(config)
    table = pd.read_csv(work / "preprocessed.csv", dtype={"patient_id": str})
    splits = pd.read_csv(work / "splits.csv", dtype={"patient_id": str})
    return cfg, table, splits


class TestBuildDatasets:
    def test_a_sample_holds_both_views_clinical_label_and_key(self, prepared):
        cfg, table, splits = prepared
        data = build_datasets(table, splits, cfg, cfg.clinical.numeric, cfg.clinical.categorical, seed=0)
        sample = data.val[0]
        assert sample["cc"].shape == sample["mlo"].shape == (1, *cfg.preprocess.size)
        assert sample["clinical"].shape == (len(data.encoder.feature_names),)
        assert sample["label"].dtype == torch.long and "/" in sample["key"]

    def test_encoder_is_fitted_on_the_training_split_only(self, prepared):
        cfg, table, splits = prepared
        data = build_datasets(table, splits, cfg, ["age"], [], seed=0)
        train_keys = set(splits.loc[splits["split"] == "train", "patient_id"])
        train_ages = table.loc[table["patient_id"].isin(train_keys), "age"]
        assert data.encoder.means["age"] == pytest.approx(train_ages.mean())

    def test_validation_and_test_are_never_augmented_or_copied(self, prepared):
        cfg, table, splits = prepared
        cfg.data, cfg.train.augment_on = DataConfig(balance="copy", copies=3, augment=True), "loader"
        data = build_datasets(table, splits, cfg, [], [], seed=0)
        assert len(data.val) == (splits["split"] == "val").sum()
        assert torch.equal(data.val[0]["cc"], data.val[0]["cc"])
        n_train = (splits["split"] == "train").sum()
        n_pos = splits.loc[splits["split"] == "train", "label"].sum()
        assert len(data.train) == n_train + 2 * n_pos
        assert data.train.transform is not None and data.val.transform is None and data.test.transform is None


class TestAugmentationOnTheDevice:
    @pytest.mark.parametrize("device", DEVICES)
    def test_raw_batches_are_the_stored_integers_and_become_the_same_brightness(self, prepared, device):
        cfg, table, splits = prepared
        cfg.train.augment_on = "loader"
        on_loader = build_datasets(table, splits, cfg, [], [], seed=0)
        cfg.train.augment_on = "auto"  # the device path, on a GPU and on the CPU alike
        raw = build_datasets(table, splits, cfg, [], [], seed=0)
        assert raw.train.transform is None and raw.train.raw and raw.val.raw
        stored, plain = raw.val[0]["cc"], on_loader.val[0]["cc"]
        assert stored.dtype == torch.uint16
        module = BreastClassifier(
            create_model(ModelConfig(backbone="tiny_cnn", pretrained="none"), 0), TrainConfig(), raw=True
        ).to(device)
        moved = stored[None].pin_memory() if device == "cuda" else stored[None]  # as the loader pins it
        moved = moved.to(device, non_blocking=True)
        batch = module.on_after_batch_transfer({"cc": moved, "mlo": moved}, 0)
        assert batch["cc"].device.type == device and torch.equal(batch["cc"][0].cpu(), plain)

    @pytest.mark.parametrize("device", DEVICES)
    def test_each_image_of_a_batch_gets_its_own_draw_in_range_and_seeded(self, device):
        augment = BatchAugmentation(DataConfig()).to(device)
        yy = torch.linspace(0, 1, 64)[:, None].expand(64, 32)
        batch = (0.2 + 0.6 * yy)[None, None].repeat(16, 1, 1, 1).to(device)  # 16 copies of one image
        torch.manual_seed(3)
        out = augment(batch)
        assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
        assert len({round(float(o.sum()), 3) for o in out}) == 16  # no two draws alike
        flipped = [bool(o[0, :8].mean() > o[0, -8:].mean()) for o in out]  # bright rows now on top
        assert 0 < sum(flipped) < 16
        torch.manual_seed(3)
        assert torch.equal(augment(batch), out)

    def test_the_device_path_resamples_like_the_loader_path_inventing_no_grey_levels(self):
        """Both paths rotate, shift and scale with nearest-neighbour resampling (torchvision's default on
        the loader path): a black-and-white image stays black and white, as under the loader path."""
        torch.manual_seed(0)
        dots = (torch.rand(8, 1, 64, 32) > 0.9).float()  # isolated bright pixels, as calcifications are
        on_device = BatchAugmentation(DataConfig()).geometry(dots)
        on_loader = standard_augmentation(DataConfig()).transforms[0](dots[0])
        for out in (on_device, on_loader):
            assert set(out.unique().tolist()) <= {0.0, 1.0}

    def test_shifts_scales_and_rotations_stay_in_the_loader_paths_ranges(self):
        """A centred bright square: its centre moves at most the translation range (3 % of the width and
        height, and the range is used), its area changes at most by the scale range (plus a pixel's
        rounding on each side); it is symmetric, so rotation about the centre and the flip keep its centre."""
        torch.manual_seed(0)
        h, w = 128, 96
        square = torch.zeros(256, 1, h, w)
        square[:, :, 44:84, 28:68] = 1.0
        out = BatchAugmentation(DataConfig()).geometry(square)[:, 0]
        ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
        area = out.sum(dim=(1, 2))
        dy = (out.sum(2) * ys).sum(1) / area - (h - 1) / 2
        dx = (out.sum(1) * xs).sum(1) / area - (w - 1) / 2
        assert dx.abs().max() <= 0.03 * w + 0.5 and dy.abs().max() <= 0.03 * h + 0.5
        assert dx.abs().max() > 0.02 * w and dy.abs().max() > 0.02 * h
        assert (area >= (0.95 * 40 - 1) ** 2).all() and (area <= (1.05 * 40 + 1) ** 2).all()

    def test_the_batch_augmentation_never_makes_the_cpu_wait_for_the_gpu(self):
        """On the meta device (tests/waits.py): nothing read back, nothing copied from the CPU."""
        batch, augment = torch.empty(8, 1, 64, 32, device="meta"), BatchAugmentation(DataConfig())
        augment(batch)  # the first call imports kornia, which makes its constants on the CPU once
        with FromTheCpu() as watch:
            out = augment(batch)
        assert out.shape == batch.shape and out.device.type == "meta" and watch.ops == []

    def test_balancing_by_augmentation_stays_on_the_loader(self, prepared):
        cfg, table, splits = prepared
        cfg.data, cfg.train.augment_on = DataConfig(balance="augment"), "device"
        with pytest.raises(DataError, match="augment_on = 'loader'"):
            build_datasets(table, splits, cfg, [], [], seed=0)
