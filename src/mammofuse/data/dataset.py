"""The training dataset: a sample is {"cc", "mlo", "clinical", "label", "key"} read from the cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from mammofuse.config import Config
from mammofuse.data.balance import (
    ClassBalancedSampler,
    EpochShuffle,
    balanced_order,
    balancing_augmentation,
    item_seed,
    seeded_global,
    standard_augmentation,
)
from mammofuse.data.clinical import AuxiliaryTargets, ClinicalEncoder
from mammofuse.data.splits import TEST, TRAIN, VAL
from mammofuse.domain import View
from mammofuse.imaging.cache import load_entry
from mammofuse.problems import DataError

Transform = Callable[[torch.Tensor], torch.Tensor]


class BreastDataset(Dataset):
    """One breast per item: both preprocessed views, the encoded clinical vector and the label.

    `order` lists row positions to serve (balancing copies repeat rows); `strong` marks items that
    get the balancing augmentation (rotation and scaling) on top of the standard one. `raw`: the views as
    stored (uint16, no transform), for a model that converts and augments whole batches on its device.

    Items are asked for by position, or (training) by (epoch, position) key (data.epochs.EpochItems):
    then the transforms draw from a generator seeded by (seed, epoch, position), so an item is augmented
    alike whichever loader process reads it, and when: a resumed run, and a run with any number of loader
    processes, augment as one straight run in this process does.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        clinical: np.ndarray,
        transform: Transform | None = None,
        order: np.ndarray | None = None,
        strong: np.ndarray | None = None,
        strong_transform: Transform | None = None,
        auxiliary: np.ndarray | None = None,
        raw: bool = False,
        seed: int = 0,
    ) -> None:
        self.cc = table[View.CC.column("cache")].tolist()
        self.mlo = table[View.MLO.column("cache")].tolist()
        self.keys = (table["patient_id"].astype(str) + "/" + table["side"].astype(str)).tolist()
        self.labels = torch.tensor(table["label"].to_numpy(), dtype=torch.long)
        self.clinical = torch.as_tensor(clinical, dtype=torch.float32)
        self.auxiliary = None if auxiliary is None else torch.as_tensor(auxiliary, dtype=torch.float32)
        self.order = np.arange(len(table)) if order is None else np.asarray(order)
        self.strong = np.zeros(len(self.order), bool) if strong is None else np.asarray(strong)
        self.transform = transform
        self.strong_transform = strong_transform
        self.raw = raw
        self.seed = seed

    def __len__(self) -> int:
        return len(self.order)

    def _view(self, path: str, strong: bool) -> torch.Tensor:
        if self.raw:
            return torch.from_numpy(load_entry(path, raw=True))[None]  # (1, H, W) uint16
        img = torch.from_numpy(load_entry(path))[None]  # (1, H, W)
        if strong and self.strong_transform is not None:
            img = self.strong_transform(img)
        if self.transform is not None:
            img = self.transform(img)
        return img

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | str]:
        epoch, i = key if isinstance(key, tuple) else (None, key)
        row, strong = int(self.order[i]), bool(self.strong[i])
        with seeded_global(None if epoch is None else item_seed(self.seed, epoch, i, len(self))):
            cc, mlo = self._view(self.cc[row], strong), self._view(self.mlo[row], strong)
        item = {
            "cc": cc,
            "mlo": mlo,
            "clinical": self.clinical[row],
            "label": self.labels[row],
            "key": self.keys[row],
            "row": row,  # which breast: a distributed sampler pads with repeats, gathered scores drop them
        }
        if self.auxiliary is not None:
            item["auxiliary"] = self.auxiliary[row]  # (K,): the auxiliary targets, NaN when missing
        return item


@dataclass
class SplitData:
    """Datasets of one split assignment, with the encoder fitted on its training rows."""

    train: BreastDataset
    val: BreastDataset
    test: BreastDataset
    encoder: ClinicalEncoder
    sampler: Sampler[int]  # the training order: seeded per epoch (shuffled, or class-balanced)
    auxiliary: AuxiliaryTargets | None = None  # extra targets predicted from the images


def augments_on_device(cfg: Config) -> bool:
    """Whether training batches travel raw and are augmented as batches where the model is
    (train.augment_on). `auto` does so on a GPU and on the CPU alike: a whole batch at once is faster
    than image by image on both (2 CPU cores: 1.1-1.3x a training epoch, benchmarks/bench_train.py)."""
    if cfg.train.augment_on == "auto":
        return cfg.data.balance != "augment"
    return cfg.train.augment_on == "device"


def build_datasets(
    table: pd.DataFrame,
    splits: pd.DataFrame,
    cfg: Config,
    numeric: list[str],
    categorical: list[str],
    seed: int,
) -> SplitData:
    """Join the preprocessed table with its split, fit the clinical encoder on train only, and
    apply balancing and augmentation to train only."""
    joined = table.merge(splits[["patient_id", "side", "split"]], on=["patient_id", "side"], how="inner")
    parts = {name: joined[joined["split"] == name].reset_index(drop=True) for name in (TRAIN, VAL, TEST)}
    if parts[TRAIN].empty:
        raise DataError("the training split is empty")
    rng = np.random.default_rng(seed)
    if cfg.train.shuffle_labels:  # leakage guard: before anything is fitted or balanced on the labels
        parts[TRAIN]["label"] = rng.permutation(parts[TRAIN]["label"].to_numpy())
    targets = cfg.model.auxiliary  # predicted, so not inputs
    auxiliary = AuxiliaryTargets.fit(parts[TRAIN], targets, numeric) if targets else None
    numeric, categorical = (
        [c for c in numeric if c not in targets],
        [c for c in categorical if c not in targets],
    )
    encoder = ClinicalEncoder.fit(
        parts[TRAIN], numeric, categorical, impute=cfg.clinical.na_policy == "impute"
    )
    order, strong = balanced_order(parts[TRAIN]["label"].to_numpy(), cfg.data, rng)
    raw = augments_on_device(cfg)
    if raw and strong.any():
        raise DataError("data.balance = 'augment' augments on the loader: set train.augment_on = 'loader'")
    train = BreastDataset(
        parts[TRAIN],
        encoder.transform(parts[TRAIN]),
        transform=standard_augmentation(cfg.data) if cfg.data.augment and not raw else None,
        order=order,
        strong=strong,
        strong_transform=balancing_augmentation(cfg.data),
        auxiliary=None if auxiliary is None else auxiliary.transform(parts[TRAIN]),
        raw=raw,
        seed=seed,
    )
    sampler: Sampler[int] = (
        ClassBalancedSampler(parts[TRAIN]["label"].to_numpy(), seed)
        if cfg.data.balance == "sampler"
        else EpochShuffle(len(train), seed)
    )
    val, test = (BreastDataset(parts[s], encoder.transform(parts[s]), raw=raw) for s in (VAL, TEST))
    return SplitData(train, val, test, encoder, sampler, auxiliary)
