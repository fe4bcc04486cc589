"""Balancing and augmentation of the training split (validation and test are never touched).

The study's variants: no balancing; positives copied k times ("x3"); positives added with random
rotation and scaling up to balance. Also a class-weighted sampler. Randomness comes from a seeded
numpy Generator or torch Generator passed in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler
from torchvision.transforms import v2

from mammofuse.config import DataConfig


def balanced_order(
    labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(order, strong): training rows to serve, and which items get the rotate/scale augmentation."""
    labels = np.asarray(labels)
    base = np.arange(len(labels))
    positives = np.flatnonzero(labels == 1)
    if cfg.balance == "copy":
        order = np.concatenate([base, np.repeat(positives, cfg.copies - 1)])
        return order, np.zeros(len(order), bool)
    if cfg.balance == "augment":
        extra = max(0, int((labels == 0).sum()) - len(positives))
        added = (
            rng.choice(positives, size=extra, replace=True) if len(positives) and extra else np.array([], int)
        )
        order = np.concatenate([base, added]).astype(int)
        return order, np.concatenate([np.zeros(len(base), bool), np.ones(len(added), bool)])
    return base, np.zeros(len(base), bool)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's draws: a run resumed at epoch e draws what the uninterrupted run drew."""
    return seed * 100_003 + epoch


def item_seed(seed: int, epoch: int, index: int, n: int) -> int:
    """The seed of one item's draws in an epoch of `n` items (its augmentation): the same whichever
    loader process reads the item, and when (data.epochs.EpochItems)."""
    return epoch_seed(seed, epoch) * n + index


@contextmanager
def seeded_global(seed: int | None) -> Iterator[None]:
    """Inside, torch's global CPU generator (what torchvision's transforms draw from) is seeded with `seed`;
    after, it is as it was (None: left alone). torch.manual_seed would also queue the seed for CUDA:
    about 60x slower, 0.2 ms an item on 2 CPU cores."""
    if seed is None:
        yield
        return
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(state)


class EpochShuffle(Sampler[int]):
    """A new order every epoch, drawn from (seed, epoch). The training loader calls `set_epoch` before it
    draws an epoch's order (data.epochs.EpochBatches; the hook DistributedSampler uses), so a resumed run
    shuffles as an uninterrupted one."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class ClassBalancedSampler(WeightedRandomSampler):
    """Draw each class equally often in expectation (balance = 'sampler'), with replacement; the draws of
    an epoch come from (seed, epoch), like EpochShuffle."""

    def __init__(self, labels: np.ndarray, seed: int) -> None:
        labels = np.asarray(labels)
        counts = np.bincount(labels, minlength=2).astype(float)
        weights = 1.0 / np.maximum(counts[labels], 1)
        super().__init__(weights.tolist(), num_samples=len(labels), replacement=True)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))


class RandomGamma(torch.nn.Module):
    """x ** gamma with gamma drawn log-uniformly in [1/limit, limit]; keeps [0, 1] in [0, 1]."""

    def __init__(self, limit: float = 1.25) -> None:
        super().__init__()
        self.log_limit = float(np.log(limit))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        gamma = float(torch.empty(1).uniform_(-self.log_limit, self.log_limit).exp())
        return img.clamp(0, 1) ** gamma


# The standard augmentation's ranges, shared by its two implementations (per image on the loader, per
# batch on the device) so that they stay one augmentation.
TRANSLATE = (0.03, 0.03)  # fraction of the width, of the height
SCALE = (0.95, 1.05)
JITTER = 0.1  # brightness and contrast factors in [1 - JITTER, 1 + JITTER]
GAMMA = 1.2  # gamma log-uniform in [1 / GAMMA, GAMMA]


def standard_augmentation(cfg: DataConfig) -> v2.Compose:
    """Small affine, a vertical flip (the chest wall stays on the left), brightness/contrast/gamma."""
    return v2.Compose(
        [
            v2.RandomAffine(degrees=cfg.augment_rotation_deg, translate=TRANSLATE, scale=SCALE),
            v2.RandomVerticalFlip(0.5),
            v2.ColorJitter(brightness=JITTER, contrast=JITTER),
            RandomGamma(GAMMA),
        ]
    )


class BatchAugmentation(torch.nn.Module):
    """`standard_augmentation` on a whole batch (B, 1, H, W) where it lies (the GPU), each image its own
    draw: the affine through kornia's warp (nearest-neighbour, as torchvision's RandomAffine on the loader
    path), the flip, and brightness, contrast and gamma as torchvision's and RandomGamma's definitions.

    Every parameter is drawn with torch on the batch's device, from torch's global generator (seeded per
    epoch), and nothing is read back: the CPU never waits for the GPU here, so it can queue the next step.
    (Kornia's RandomAffine module moves its draws to the CPU and back, a wait per batch on a GPU.)"""

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        self.degrees = float(cfg.augment_rotation_deg)
        self.log_gamma = float(np.log(GAMMA))

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation about the centre, translation and isotropic scaling, then a vertical flip of half."""
        from kornia.geometry.transform import get_affine_matrix2d, warp_affine

        b, _, h, w = x.shape
        dx, dy = TRANSLATE[0] * w, TRANSLATE[1] * h
        shift = torch.stack([_uniform(x, -dx, dx), _uniform(x, -dy, dy)], -1)
        centre = torch.stack([x.new_full((b,), (w - 1) / 2), x.new_full((b,), (h - 1) / 2)], -1)
        scale = _uniform(x, *SCALE)[:, None].expand(b, 2)
        matrix = get_affine_matrix2d(shift, centre, scale, _uniform(x, -self.degrees, self.degrees))
        x = warp_affine(x, matrix[:, :2], (h, w), mode="nearest", align_corners=False)
        return torch.where(_uniform(x, 0, 1)[:, None, None, None] < 0.5, x.flip(-2), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.geometry(x)

        def factor(low: float, high: float) -> torch.Tensor:
            return _uniform(x, low, high)[:, None, None, None]

        x = (x * factor(1 - JITTER, 1 + JITTER)).clamp(0, 1)  # brightness: scale
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (mean + (x - mean) * factor(1 - JITTER, 1 + JITTER)).clamp(0, 1)  # contrast: toward the mean
        return x ** factor(-self.log_gamma, self.log_gamma).exp()


def _uniform(batch: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """One number per image of `batch`, uniform in [low, high), made on its device (no copy from the CPU)."""
    return torch.empty(batch.shape[0], device=batch.device).uniform_(low, high)


def balancing_augmentation(cfg: DataConfig) -> v2.RandomAffine:
    """The study's third variant: random rotation and scaling of added positives."""
    return v2.RandomAffine(degrees=cfg.rotation_deg, scale=(1 - cfg.scale, 1 + cfg.scale))
