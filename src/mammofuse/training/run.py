"""One training run: prepare the data, build the model, fit with checkpoints, resume when interrupted.

The run directory (layout: `mammofuse.runs.Run`) holds everything needed to evaluate the run or
predict with it alone: the resolved config, data.csv, the encoder, epochs.csv and the checkpoints
(best.ckpt: the kept epoch, by `train.checkpoint` the best validation AUC or the last; and the last two
epochs, to resume from).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader

from mammofuse.config import Config, TrainConfig
from mammofuse.data.balance import BatchAugmentation, epoch_seed
from mammofuse.data.dataset import BreastDataset, SplitData, build_datasets
from mammofuse.data.epochs import EpochItems, EpochStream
from mammofuse.data.splits import thin_training
from mammofuse.imaging.preprocess import preprocess_cohort
from mammofuse.models import TwoViewNet, create_model
from mammofuse.problems import DataError, Problems
from mammofuse.runs import KEY_DTYPES, Run, Work, changes_text, data_changes, kept_epoch
from mammofuse.storage import distributed_follower, replace_text, replaced, write_table
from mammofuse.training.module import BreastClassifier
from mammofuse.ui import console, show_problems

EPOCH_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "train_auc",
    "val_loss",
    "val_acc",
    "val_auc",
    "improved",
]


class EpochReport(Callback):
    """One line per epoch, like the study's log, and epochs.csv; its state survives a resume."""

    def __init__(self, run: Run, keep: str = "best") -> None:
        self.path = run.epochs
        self.rows: list[dict[str, float]] = []
        self.saved = "  improved, saved" if keep == "best" else "  improved"  # 'last' keeps every epoch

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_auc" not in trainer.callback_metrics:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = max((r["val_auc"] for r in self.rows), default=-1.0)
        row = {"epoch": trainer.current_epoch + 1, **{k: m.get(k, float("nan")) for k in EPOCH_COLUMNS[1:-1]}}
        row["improved"] = int(row["val_auc"] > best)
        self.rows.append(row)
        if trainer.is_global_zero:
            replace_text(self.path, pd.DataFrame(self.rows, columns=EPOCH_COLUMNS).to_csv(index=False))
            console.print(
                f"epoch {row['epoch']:3d}/{trainer.max_epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.3f} AUC {row['train_auc']:.3f} | "
                f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} "
                f"AUC {row['val_auc']:.3f}" + (self.saved if row["improved"] else "")
            )

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


def kept_val_auc(epochs: pd.DataFrame, keep: str) -> float:
    """The validation AUC of the epoch a run keeps (`train.checkpoint`): the best, or the last."""
    return float(kept_epoch(epochs, keep)["val_auc"])


def preprocessed_for(cfg: Config, manifest: pd.DataFrame, run: Run) -> pd.DataFrame:
    """The cohort preprocessed with this run's settings (a preset may use other settings than the work
    folder's `mammofuse preprocess`): what is missing from the cache is built, and every breast that
    cannot be used is reported as `mammofuse preprocess` reports it, and written to the run folder."""
    problems = Problems()
    table, stats, cache = preprocess_cohort(manifest, cfg.preprocess, cfg.cache_dir, problems)
    if stats.decoded:
        h, w = cfg.preprocess.output_shape
        console.print(
            f"this run's preprocessing ({cfg.preprocess.mode}, {h}x{w}) was not in the cache: "
            f"{stats.decoded} images decoded into {cache.dir}"
        )
        if enlarged := stats.enlarged_text((h, w)):
            console.print(f"[yellow]{enlarged}[/]")
    problems.write_csv(run.preprocess_problems)
    if problems.items:
        show_problems(problems, "preprocessing problems", str(run.preprocess_problems))
    return table


def work_splits(cfg: Config) -> pd.DataFrame:
    """The work folder's train/val/test split (checked against the cohort config it was made from), its
    training part thinned to data.train_fraction of its patients (validation and test whole)."""
    work = Work(cfg.work_dir)
    work.check_cohort(cfg)
    splits = work.read_splits()
    if "split" not in splits:
        raise DataError(
            f"{work.splits} holds {splits['fold'].nunique()} cross-validation folds (split.folds = "
            f"{cfg.split.folds}); `mammofuse train` needs one train/val/test split: set split.folds = 0 "
            "and run `mammofuse split` again, or use `mammofuse cv`"
        )
    return thin_training(splits, cfg.data.train_fraction, cfg.split.seed)


def prepare_run(
    cfg: Config, run: Run, splits: pd.DataFrame, table: pd.DataFrame, data: pd.DataFrame, info: dict
) -> SplitData:
    """Write the run directory's data files (config, data.csv, encoder) and return the datasets.
    `table`: the cohort preprocessed with this run's settings; `data`: `run_data` of it."""
    datasets = build_datasets(table, splits, cfg, info["numeric"], info["categorical"], seed=cfg.train.seed)
    run.write_config(cfg)
    write_table(data, run.data)
    datasets.encoder.save(run.encoder)
    replace_text(run.ingest_info, json.dumps(info, indent=2))
    return datasets


def run_data(table: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """A run's data.csv: every breast with its split, its cache entries and their checksums (what the model
    saw, wherever the files lie), as read back from the file."""
    joined = table.merge(splits[["patient_id", "side", "split"]], on=["patient_id", "side"])
    return pd.read_csv(io.StringIO(joined.to_csv(index=False)), dtype=KEY_DTYPES)


def check_same_data(run: Run, now: pd.DataFrame, info: dict) -> None:
    """Refuse a run trained on other data than `now` (its `run_data`) with a DataError that says what
    changed: it can neither resume nor stand for this data."""
    if not run.data.is_file():
        return
    changed = data_changes(run.read_data(), now, info["numeric"] + info["categorical"])
    if changed:
        raise DataError(
            f"{run.dir} was trained on other data than it is given now ({changes_text(changed)}: the cohort, "
            "its preprocessing or the split was made again): it can neither resume nor stand for this data. "
            "Start it over (`train --force`, or delete the folder), or train another run beside it "
            "(--run NAME)"
        )


class EpochSeed(Callback):
    """Augmentation (torchvision v2 draws from torch's global generator) and dropout are reseeded from
    (seed, epoch) when an epoch starts, as the training order is (data.balance.EpochShuffle). A run resumed
    after epoch e therefore draws exactly what the uninterrupted run drew: a faithful resume on CPU, with
    no generator state to save. On the device path (train.augment_on, the default), augmentation is drawn
    in this process; on the loader path each item's augmentation is drawn from (seed, epoch, item)
    (data.dataset.BreastDataset), so loader processes change nothing on either path."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        torch.manual_seed(epoch_seed(self.seed, trainer.current_epoch))


class CtrlC(Callback):
    """Ctrl-C while `trainer.fit` runs stops training at the end of the batch under way, from where
    Lightning's own handling of a KeyboardInterrupt stops cleanly. Python's default handler raises the
    KeyboardInterrupt wherever the main thread happens to be, and some C code loses it there: numpy's
    `fromfile` turned it into a TypeError, and C code that clears errors (a C-level hasattr) drops it, so a
    Ctrl-C now and then ended in a traceback or was ignored. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.pressed = False

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Catch Ctrl-C in this block (in the main thread; elsewhere signals cannot be handled); one pressed
        after the last batch, while training ends, is raised when the block ends. A process started with
        Ctrl-C ignored (a shell's background job) keeps ignoring it."""
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        ):
            yield
            return
        previous = signal.signal(signal.SIGINT, self._press) or signal.default_int_handler  # None: set in C
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)  # also undoes Lightning's SIG_IGN after an interrupt
        self._stop()

    def _press(self, signum: int, frame: Any) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def _stop(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._stop()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self._stop()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed over the old one: a kill or a full disk
    in the middle of a write leaves the previous checkpoint whole. `keep`: checkpoint -> where its
    previous version goes (the run's last two epochs are kept, so a last checkpoint damaged after it
    was written still leaves one to resume from).

    The write runs in a thread, so training does not wait for the disk: two resnet18s with their optimizer
    state make a 256 MiB checkpoint, 0.7 s to write on 2 CPU cores, more than half an epoch at a GPU's pace
    (benchmarks/bench_checkpoint.py). The checkpoint is copied first (its tensors cloned where they lie), so
    training goes on changing the weights; writes go one at a time, in order; a write's error (a full disk)
    is raised at the next checkpoint or when training ends, which waits for the last write. (The loaders'
    processes start once a run, at the first epoch and the first validation, before any write starts:
    forking beside a running thread could hang the children.)"""

    def __init__(self, keep: dict[Path, Path] | None = None) -> None:
        super().__init__()
        self.keep = keep or {}
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.wait()
        snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().clone())
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = self._writer.submit(self._write, snapshot, Path(path), storage_options)

    def _write(self, checkpoint: dict[str, Any], path: Path, storage_options: Any) -> None:
        with replaced(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            if path in self.keep and path.is_file():
                os.replace(path, self.keep[path])

    def wait(self) -> None:
        """Return when the last checkpoint is on disk; raise its write's error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def teardown(self) -> None:
        try:
            self.wait()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None


def loader_workers(cfg: TrainConfig) -> int:
    """Loader processes: as configured, or (-1) none on the CPU (they would take the model's cores) and
    up to 8 beside a GPU."""
    if cfg.num_workers >= 0:
        return cfg.num_workers
    return min(8, torch.get_num_threads()) if torch.cuda.is_available() else 0


def loader_options(cfg: Config) -> dict[str, Any]:
    """The DataLoader options of every loader of a run: its processes, pinned memory beside a GPU."""
    return {
        "num_workers": loader_workers(cfg.train),
        "pin_memory": torch.cuda.is_available(),
        # the workers' seeds come from here, not from torch's global generator, which EpochSeed owns
        "generator": torch.Generator().manual_seed(cfg.train.seed),
    }


def loader(dataset: BreastDataset, cfg: Config) -> DataLoader:
    """One pass over `dataset` in its order (evaluation); training goes through `EpochStream`s."""
    return DataLoader(dataset, batch_size=cfg.train.batch_size, **loader_options(cfg))


def precision_for(cfg: TrainConfig) -> str:
    """The training precision: as configured, or by hardware ('auto'): bf16 autocast on a GPU that has
    it (no loss scaling needed), fp16 autocast on older GPUs, fp32 on the CPU (deterministic)."""
    if cfg.precision != "auto":
        return cfg.precision
    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def setup(cfg: Config, raw: bool) -> dict[str, Any]:
    """How this session trains: the hardware and what was chosen for it (precision, where batches are
    augmented, loader processes, compilation). CPU results reproduce exactly only with the same number of
    torch threads and the same vector instructions (AVX2, AVX512: other kernels sum in another order), so
    both are recorded too."""
    gpu = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if gpu else f"CPU ({torch.backends.cpu.get_cpu_capability()})",
        "devices": cfg.train.devices,
        "nodes": cfg.train.nodes,
        "torch threads": torch.get_num_threads(),
        "precision": precision_for(cfg.train),
        "augment on": ("device" if raw else "loader") if cfg.data.augment else "no augmentation",
        "loader processes": loader_workers(cfg.train),
        "compiled": cfg.train.compile,
        "torch": torch.__version__,
    }


def record_setup(run: Run, session: dict[str, Any], from_epoch: int) -> None:
    """Say how training runs and add it to the run's hardware.json (a resumed run may have moved to other
    hardware: one entry per session, with the epoch it started from)."""
    if distributed_follower():  # the run's first process speaks for all
        return
    console.print(
        f"training on {session['device']} ({session['torch threads']} torch threads): "
        f"{session['precision']}, augmentation: {session['augment on']}, "
        f"{session['loader processes']} loader processes{', compiled' if session['compiled'] else ''}"
    )
    sessions = run.read_hardware()
    if sessions is None:
        console.print(f"[yellow]{run.hardware} cannot be read: it is written anew from this session[/]")
        sessions = []
    sessions = [s for s in sessions if s["from epoch"] < from_epoch]  # a start over forgets later ones
    replace_text(run.hardware, json.dumps([*sessions, {"from epoch": from_epoch, **session}], indent=2))


def compiled(net: TwoViewNet) -> None:
    """torch.compile what a training or validation step runs of the network (`scores`: the logits and the
    image features the auxiliary heads read), in place: the weights keep their names. (`nn.Module.compile`
    would compile only `forward`, which the steps do not call.) Where compilation fails the network runs
    as it is, with a message, instead of the run failing.

    The whole-image network's inputs have one size: each batch size gets a graph made for it. By default
    torch.compile meets an epoch's last, partial batch by compiling a graph for any batch size, and every
    later full batch then runs that more general graph, not the one made for it (the in-memory step that
    bench_train compares training with runs the specialised one). Here the partial batch costs the same one
    compilation and the full batches keep theirs. The patch model encodes a different number of tiles in
    every batch: its shapes stay free."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # fall back to eager per graph that cannot compile
    dynamic = False if net.kind == "whole" else None
    try:
        net.scores = torch.compile(net.scores, dynamic=dynamic)  # type: ignore[method-assign]
    except Exception as exc:  # no compiler toolchain, an unsupported platform, ...
        console.print(
            f"[yellow]warning:[/] train.compile: torch.compile is not available ({exc}); uncompiled"
        )


def trainer_for(cfg: Config, run: Run, callbacks: list[Callback] | None = None) -> L.Trainer:
    gpu = torch.cuda.is_available()
    # The kept epoch's weights alone (the best validation AUC, or with train.checkpoint = "last" each
    # epoch's in turn): evaluate, explain and bundle read only them, and resuming starts from the last
    # epoch's full checkpoint; without the optimizer's state it is a third of the size (85 of 256 MiB for two
    # resnet18s with AdamW).
    best = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename=run.checkpoint("best").stem,
        monitor="val_auc" if cfg.train.checkpoint == "best" else None,
        mode="max",
        save_weights_only=True,
        enable_version_counter=False,
    )
    # Every epoch, improved or not: `save_last` of a monitored checkpoint writes only when it improves,
    # so a run killed after a non-improving epoch would resume from an older one.
    last = ModelCheckpoint(
        dirpath=run.checkpoints, filename=run.checkpoint("last").stem, enable_version_counter=False
    )
    return L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator="auto",
        devices=cfg.train.devices,
        num_nodes=cfg.train.nodes,
        strategy="ddp" if cfg.train.ddp else "auto",
        sync_batchnorm=cfg.train.ddp and gpu,  # one set of batch statistics (SyncBatchNorm needs a GPU)
        precision=precision_for(cfg.train),  # type: ignore[arg-type]
        deterministic=not gpu,  # on a GPU, speed: cudnn picks the fastest kernels for the input shapes
        benchmark=gpu,
        callbacks=[best, last, EpochReport(run, cfg.train.checkpoint), *(callbacks or [])],
        plugins=[AtomicCheckpointIO(keep={run.checkpoint("last"): run.checkpoint("previous")})],
        logger=False,
        enable_progress_bar=console.is_terminal,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run.dir,
    )


def _quiet_lightning() -> None:
    """Keep Lightning's banners and tips out of the study's log; warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")  # inside Lightning's DDP gather
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")  # resume


def train(cfg: Config, run_dir: Path, callbacks: list[Callback] | None = None) -> Path:
    """Train on the work folder's split (or resume from the run's last checkpoint); return the kept
    checkpoint's path (best.ckpt)."""
    return fit(cfg, Run(run_dir), work_splits(cfg), callbacks=callbacks)


def fit(
    cfg: Config,
    run: Run,
    splits: pd.DataFrame,
    table: pd.DataFrame | None = None,
    callbacks: list[Callback] | None = None,
) -> Path:
    """Train one run on `splits` (train / val / test per breast); resume from its last checkpoint; a
    finished run is left as it is. A run trained on other data than `splits` and the cohort give now is
    refused (DataError): it can stand for neither."""
    _quiet_lightning()
    resume, done = resume_point(run)
    manifest, info = Work(cfg.work_dir).read_manifest()
    run.dir.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = preprocessed_for(cfg, manifest, run)
    now = run_data(table, splits)
    if done:
        check_same_data(run, now, info)
    if done >= cfg.train.epochs:
        epochs = f"{done} epoch" + ("s" if done > 1 else "")
        console.print(f"{run.dir}: finished before ({epochs}); `--force` starts it over")
        return run.checkpoint("best")
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    data = prepare_run(cfg, run, splits, table, now, info)
    net = create_model(cfg.model, n_clinical=len(data.encoder.feature_names))
    raw = data.train.raw
    augmentation = BatchAugmentation(cfg.data) if raw and cfg.data.augment else None
    module = BreastClassifier(net, cfg.train, data.auxiliary, raw, augmentation)
    if cfg.train.compile:
        compiled(module.net)
        if module.average is not None:
            compiled(module.average.module)  # type: ignore[arg-type]
    if done:
        console.print(f"resuming from {resume} ({done} of {cfg.train.epochs} epochs done)")
    record_setup(run, setup(cfg, raw), from_epoch=done)
    ctrl_c = CtrlC()
    trainer = trainer_for(cfg, run, [EpochSeed(cfg.train.seed), ctrl_c, *(callbacks or [])])
    size = cfg.train.batch_size
    train_batches = EpochStream(data.train, size, EpochItems(data.sampler), **loader_options(cfg))
    val_batches = EpochStream(data.val, size, **loader_options(cfg))
    try:
        with ctrl_c.listening():
            trainer.fit(module, train_batches, val_batches, ckpt_path=resume if done else None)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after saving what it can
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        train_batches.close()
        val_batches.close()
    return run.checkpoint("best")


def resume_point(run: Run) -> tuple[Path | None, int]:
    """The checkpoint a run resumes from and how many epochs it holds ((None, 0): start from scratch).
    The last epoch's checkpoint, else the one before it; an unreadable one (damaged by hand, a disk
    that failed after the write) is set aside, never deleted, with a warning."""
    damaged = False
    for path in (run.checkpoint("last"), run.checkpoint("previous")):
        found = path.is_file()
        done = epochs_in(path)
        if done:
            return path, done
        damaged |= found
    if damaged:
        console.print(f"{run.dir}: no checkpoint can be read; starting this run over")
    return None, 0


def epochs_in(checkpoint: Path) -> int:
    """How many epochs a checkpoint holds (0 when there is none, or it is unreadable and set aside)."""
    if not checkpoint.is_file():
        return 0
    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]) + 1
    except Exception as exc:  # truncated zip, not a checkpoint, a pickle weights_only refuses, ...
        aside = checkpoint.with_name(f"{checkpoint.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        checkpoint.rename(aside)
        console.print(
            f"[yellow]warning:[/] {checkpoint} cannot be read ({type(exc).__name__}); "
            f"set aside as {aside.name}"
        )
        return 0


def start_over(run: Run) -> None:
    """Forget a run's training (`train --force`): its checkpoints, epoch log and sessions, and what was made
    from its model (metrics, predictions, figures, Grad-CAM maps, bundle, report). Kept, they would
    describe a model that is gone beside the training curves of the new one, and `report` or `predict`
    would use them without a word."""
    removed = [path.name for path in run.made_from_model if path.exists()]
    for path in [run.checkpoints, run.epochs, run.hardware, *run.made_from_model]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if removed:
        console.print(f"--force: removed the previous model's {', '.join(removed)}")
