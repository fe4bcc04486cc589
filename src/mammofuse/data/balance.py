"""Balancing and augmentation of the training split (validation and test are never touched).

The study's variants: no balancing; positives copied k times ("x3"); positives added with random
rotation and scaling up to balance. Also a class-weighted sampler. Randomness comes from a seeded
numpy Generator or torch Generator passed in.
"""

from __future__ import annotations

from collections.abc import Iterator

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


class EpochShuffle(Sampler[int]):
    """A new order every epoch, drawn from (seed, epoch). Lightning calls `set_epoch` before each epoch's
    iterator is made (the hook DistributedSampler uses), so a resumed run shuffles as an uninterrupted one."""

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
    draw: the affine and the flip through kornia, brightness, contrast and gamma as torchvision's and
    RandomGamma's definitions, vectorised. Draws from torch's global generator (seeded per epoch)."""

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        import kornia.augmentation as K

        self.geometry = torch.nn.Sequential(
            K.RandomAffine(  # nearest-neighbour resampling, as torchvision's RandomAffine on the loader path
                cfg.augment_rotation_deg, TRANSLATE, SCALE, resample="nearest", p=1.0
            ),
            K.RandomVerticalFlip(p=0.5),
        )
        self.log_gamma = float(np.log(GAMMA))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.geometry(x)
        b = x.shape[0]

        def draw(low: float, high: float) -> torch.Tensor:
            return torch.empty(b, 1, 1, 1, device=x.device).uniform_(low, high)

        x = (x * draw(1 - JITTER, 1 + JITTER)).clamp(0, 1)  # brightness: scale
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (mean + (x - mean) * draw(1 - JITTER, 1 + JITTER)).clamp(0, 1)  # contrast: toward the mean
        return x ** draw(-self.log_gamma, self.log_gamma).exp()


def balancing_augmentation(cfg: DataConfig) -> v2.RandomAffine:
    """The study's third variant: random rotation and scaling of added positives."""
    return v2.RandomAffine(degrees=cfg.rotation_deg, scale=(1 - cfg.scale, 1 + cfg.scale))
