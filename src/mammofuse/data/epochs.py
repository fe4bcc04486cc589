"""Training batches, epoch after epoch, from one loader iterator that reads the next epoch while one ends.

A DataLoader begins an epoch's batches only when the epoch asks for the first one. Its processes sit idle
through the end of the previous epoch, its validation and its checkpoint, and every epoch then starts by
waiting for one batch to be read and assembled: 50-120 ms with 2 loader processes on 2 CPU cores, and
(estimated) 5-10 % of an epoch at a GPU's compiled pace (benchmarks/bench_train.py prints it).
`EpochStream` keeps one iterator over the sampler's epochs one after another, so while an epoch ends the
processes already read the next one's first batches (`prefetch_factor` each).

The batches are the DataLoader's, epoch by epoch: the sampler's order for the epoch Lightning asks for
(`set_epoch`), the last partial batch kept (or dropped: `drop_last`). Without loader processes nothing is
read ahead, so the CPU's default training is unchanged to the last digit. `mammofuse train` and
`mammofuse pretrain` both read their training batches this way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import torch.distributed as dist
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler


class EpochBatches(Sampler[list[Any]]):
    """`sampler`'s batches for `first` epoch, then the next, without end (set_epoch before each)."""

    def __init__(self, sampler: Sampler[Any], batch_size: int, first: int, drop_last: bool = False) -> None:
        self.sampler, self.batch_size, self.first, self.drop_last = sampler, batch_size, first, drop_last

    def __iter__(self) -> Iterator[list[Any]]:
        for epoch in itertools.count(self.first):
            set_epoch = getattr(self.sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
            yield from BatchSampler(self.sampler, self.batch_size, self.drop_last)


class EpochItems(Sampler[tuple[int, int]]):
    """`sampler`'s indices as (epoch, index) keys, for a dataset that draws an item's augmentation from
    both (data.balance.item_seed): what an item gets then does not depend on which loader process reads
    it, or when (a resumed run, or a loader that reads the next epoch ahead, draws what one straight run
    draws). `set_epoch` is passed on to `sampler` (its order per epoch)."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class NextEpoch:
    """Where Lightning says which epoch comes next (it calls `set_epoch` on a loader's `.sampler`)."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class EpochStream:
    """A sized iterable of batches for Lightning (`fit`'s training and validation loaders) or a plain loop
    (pretraining): each pass yields one epoch of `order` (default: the dataset in order), from one
    DataLoader iterator that goes on into the next epoch (see the module's doc). `options`: the
    DataLoader's (num_workers, pin_memory, generator, ...).

    Lightning says which epoch a pass serves through `.sampler.set_epoch`, and sets `.worker_init_fn` (the
    processes' seeds under `seed_everything(workers=True)`) as it does on a DataLoader. A pass that asks
    for another epoch than the one read ahead, or one after a pass cut short, starts a new iterator at
    that epoch. Under DDP each process serves its share of every epoch, as with the DistributedSampler
    Lightning gives a DataLoader (padded with repeats to equal length)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        order: Sampler[Any] | None = None,
        drop_last: bool = False,
        **options: Any,
    ) -> None:
        self.dataset, self.batch_size, self.drop_last, self.options = dataset, batch_size, drop_last, options
        self.order = order if order is not None else SequentialSampler(dataset)  # type: ignore[arg-type]
        self.sampler, self.batch_sampler = NextEpoch(), None  # as a DataLoader's, for Lightning
        self.worker_init_fn: Callable[[int], None] | None = None
        self._batches: Iterator[Any] | None = None
        self._ahead: int | None = None  # the epoch `_batches` is at the start of (None: mid-epoch)

    def _shard(self) -> Sampler[Any]:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return DistributedSamplerWrapper(
                self.order, num_replicas=dist.get_world_size(), rank=dist.get_rank(), shuffle=False
            )
        return self.order

    def __len__(self) -> int:
        n = len(self._shard())  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.sampler.epoch
        if self._batches is None or self._ahead != epoch:
            self.close()
            order = EpochBatches(self._shard(), self.batch_size, epoch, self.drop_last)
            self._batches = iter(
                DataLoader(
                    self.dataset, batch_sampler=order, worker_init_fn=self.worker_init_fn, **self.options
                )
            )
        self._ahead, n = None, len(self)
        for i in range(n):
            if self._batches is None:  # closed while Lightning still holds this pass
                return
            batch = next(self._batches)
            if i == n - 1:  # the iterator stands at the next epoch (Lightning stops at len, not at the end)
                self._ahead = self.sampler.epoch = epoch + 1
            yield batch

    def close(self) -> None:
        """Stop the loader's processes (they also stop when the stream is dropped)."""
        self._batches = self._ahead = None
