"""EpochStream: the batches a DataLoader gives epoch by epoch, with the next epoch read while one ends."""

import multiprocessing
import os
import time

import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from mammofuse.data.balance import ClassBalancedSampler, EpochShuffle
from mammofuse.data.epochs import EpochStream

N, BATCH = 22, 4  # the last batch of an epoch is partial


class Counted(Dataset):
    """Items are their index and the process that read them; every read is counted across processes."""

    def __init__(self) -> None:
        self.reads = multiprocessing.Value("i", 0)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict[str, int]:
        with self.reads.get_lock():
            self.reads.value += 1
        return {"i": i, "pid": os.getpid()}


def sampler(kind: str):
    labels = np.arange(N) % 3 == 0
    return EpochShuffle(N, seed=5) if kind == "shuffle" else ClassBalancedSampler(labels.astype(int), seed=5)


def dataloader_epoch(kind: str, epoch: int, drop_last: bool = False) -> list[list[int]]:
    order = sampler(kind)
    order.set_epoch(epoch)
    loader = DataLoader(Counted(), batch_size=BATCH, sampler=order, drop_last=drop_last)
    return [b["i"].tolist() for b in loader]


def passes(stream: EpochStream, epochs) -> list[list[list[int]]]:
    """Each epoch's batches, the epoch set as Lightning sets it before a pass."""
    out = []
    for epoch in epochs:
        stream.sampler.set_epoch(epoch)
        out.append([b["i"].tolist() for b in stream])
    return out


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["shuffle", "class-balanced"])
def test_each_pass_serves_the_batches_a_dataloader_gives_that_epoch(kind, workers):
    stream = EpochStream(Counted(), BATCH, sampler(kind), num_workers=workers)
    assert len(stream) == 6
    try:
        assert passes(stream, range(3)) == [dataloader_epoch(kind, e) for e in range(3)]
    finally:
        stream.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_with_drop_last_each_epoch_leaves_out_its_partial_batch_as_a_dataloader_does(workers):
    stream = EpochStream(Counted(), BATCH, sampler("shuffle"), drop_last=True, num_workers=workers)
    assert len(stream) == 5
    try:
        assert passes(stream, range(3)) == [dataloader_epoch("shuffle", e, drop_last=True) for e in range(3)]
    finally:
        stream.close()


def test_while_an_epoch_ends_the_same_loader_processes_read_the_next_epochs_first_batches():
    dataset = Counted()
    stream = EpochStream(dataset, BATCH, EpochShuffle(N, seed=5), num_workers=2, prefetch_factor=2)
    try:
        first = list(stream)  # epoch 0, all of it
        deadline = time.monotonic() + 30
        while dataset.reads.value < N + 2 * BATCH and time.monotonic() < deadline:
            time.sleep(0.01)  # validation, checkpoints...
        # before epoch 1 asked for anything, its first batches were read
        assert dataset.reads.value >= N + 2 * BATCH
        second = list(stream)
        assert [[b["i"].tolist() for b in epoch] for epoch in (first, second)] == [
            dataloader_epoch("shuffle", e) for e in (0, 1)
        ]
        pids = [{int(p) for b in epoch for p in b["pid"]} for epoch in (first, second)]
        assert pids[0] == pids[1] and len(pids[0]) == 2  # no processes started for epoch 1
    finally:
        stream.close()


def test_a_pass_cut_short_or_an_epoch_out_of_turn_starts_that_epoch_afresh():
    stream = EpochStream(Counted(), BATCH, EpochShuffle(N, seed=5), num_workers=2)
    try:
        passes(stream, [0])
        stream.sampler.set_epoch(1)
        next(iter(stream))  # epoch 1 stopped after one batch (an exception in a training step)
        assert passes(stream, [1, 4]) == [dataloader_epoch("shuffle", e) for e in (1, 4)]
    finally:
        stream.close()


def test_without_a_sampler_each_pass_serves_the_dataset_in_order():
    stream = EpochStream(Counted(), BATCH)
    assert passes(stream, [0, 1]) == [[list(range(i, min(i + BATCH, N))) for i in range(0, N, BATCH)]] * 2


def test_closing_stops_the_loader_processes():
    stream = EpochStream(Counted(), BATCH, EpochShuffle(N, seed=5), num_workers=2)
    before = set(multiprocessing.active_children())  # another test's, if any
    batches = iter(stream)
    next(batches)  # Lightning holds the pass it stopped reading until training's objects are collected
    assert len(set(multiprocessing.active_children()) - before) == 2
    stream.close()
    assert set(multiprocessing.active_children()) - before == set()
    assert list(batches) == []
