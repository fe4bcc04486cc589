"""Shared helpers for the benchmarks: a cohort made once per settings, and a timer."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mammofuse.cohort.synth import SynthOptions, synthesize


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser with the option every benchmark shares: where its synthetic cohorts are kept."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(tempfile.gettempdir()) / "mammofuse-bench",
        help="folder for the benchmark cohorts (reused between runs)",
    )
    return parser


def cohort(root: Path, breasts: int, size: tuple[int, int], compression: str = "none", seed: int = 0) -> Path:
    """A synthetic cohort under `root`, reused when it already exists with these settings."""
    out = root / f"cohort-{breasts}-{size[0]}x{size[1]}-{compression}-{seed}"
    if not (out / "cohort.toml").is_file():
        synthesize(out, SynthOptions(breasts=breasts, seed=seed, image_size=size, compression=compression))
    return out


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def prepared_data(
    root: Path, breasts: int, image_size: tuple[int, int], preprocess: dict, augment: bool = True
):
    """(config, SplitData) for a cohort ingested, preprocessed with `preprocess` settings and split."""
    from mammofuse.cohort.ingest import ingest, write_outputs
    from mammofuse.config import load_config
    from mammofuse.data.dataset import build_datasets
    from mammofuse.data.splits import make_splits
    from mammofuse.imaging.preprocess import preprocess_cohort
    from mammofuse.problems import Problems
    from mammofuse.runs import Work

    cfg = load_config(cohort(root, breasts, image_size) / "cohort.toml")
    cfg.preprocess = cfg.preprocess.model_copy(update=preprocess)
    cfg.data.augment = augment
    result = ingest(cfg, Problems())
    write_outputs(result, cfg, Work(cfg.work_dir))
    table, _, _ = preprocess_cohort(result.manifest, cfg.preprocess, cfg.cache_dir, Problems())
    splits = make_splits(table, cfg.split)
    splits.to_csv(Work(cfg.work_dir).splits, index=False)  # for benchmarks that run `fit` on the cohort
    return cfg, build_datasets(table, splits, cfg, result.numeric, result.categorical, seed=0)


def train_step(cfg, n_clinical: int):
    """A training step of the configured model (forward, loss, backward, SGD update) on one batch."""
    import torch

    from mammofuse.models import create_model

    net = create_model(cfg.model, n_clinical).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step(batch: dict) -> None:
        cc, mlo = (batch[v].contiguous(memory_format=torch.channels_last) for v in ("cc", "mlo"))
        loss = torch.nn.functional.cross_entropy(net(cc, mlo, batch["clinical"]), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step
