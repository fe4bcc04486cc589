"""One training run: prepare the data, build the model, fit with checkpoints, resume when interrupted.

The run directory holds everything needed to evaluate the run or predict with it alone:
config.toml (resolved), data.csv (every breast with its split and cache entries), encoder.json,
epochs.csv (per-epoch metrics), checkpoints/best.ckpt (best validation AUC) and last.ckpt.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from mammofuse.cohort.ingest import read_manifest
from mammofuse.config import Config, load_config, save_config
from mammofuse.data.dataset import BreastDataset, SplitData, build_datasets
from mammofuse.data.splits import read_splits
from mammofuse.imaging.preprocess import preprocess_cohort
from mammofuse.models import create_model
from mammofuse.problems import Problems
from mammofuse.training.module import BreastClassifier
from mammofuse.ui import console

CHECKPOINTS = "checkpoints"
EPOCHS = "epochs.csv"
EPOCH_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_auc", "improved"]


class EpochReport(Callback):
    """One line per epoch, like the study's log, and epochs.csv; its state survives a resume."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / EPOCHS
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_auc" not in trainer.callback_metrics:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        best = max((r["val_auc"] for r in self.rows), default=-1.0)
        row = {"epoch": trainer.current_epoch + 1, **{k: m.get(k, float("nan")) for k in EPOCH_COLUMNS[1:6]}}
        row["improved"] = int(row["val_auc"] > best)
        self.rows.append(row)
        if trainer.is_global_zero:
            with self.path.open("w", newline="") as fh:
                writer = csv.DictWriter(fh, EPOCH_COLUMNS)
                writer.writeheader()
                writer.writerows(self.rows)
            console.print(
                f"epoch {row['epoch']:3d}/{trainer.max_epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} "
                f"AUC {row['val_auc']:.3f}" + ("  improved, saved" if row["improved"] else "")
            )

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])


def prepare_run(cfg: Config, run_dir: Path) -> SplitData:
    """Write the run directory's data files (config, data.csv, encoder) and return the datasets."""
    manifest, info = read_manifest(cfg.work_dir)
    splits = read_splits(cfg.work_dir)
    # This run's preprocessing settings may differ from the work folder's (a preset): complete the cache.
    table, _, _ = preprocess_cohort(manifest, cfg.preprocess, cfg.cache_dir, Problems())
    data = build_datasets(table, splits, cfg, info["numeric"], info["categorical"], seed=cfg.train.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.toml")
    joined = table.merge(splits[["patient_id", "side", "split"]], on=["patient_id", "side"])
    joined.to_csv(run_dir / "data.csv", index=False)
    data.encoder.save(run_dir / "encoder.json")
    (run_dir / "ingest.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return data


def loader(dataset: BreastDataset, cfg: Config, train: bool = False, sampler=None) -> DataLoader:
    workers = cfg.train.num_workers
    if workers < 0:
        workers = min(8, torch.get_num_threads()) if torch.cuda.is_available() else 0
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.train.seed) if train else None,
    )


def trainer_for(cfg: Config, run_dir: Path, callbacks: list[Callback] | None = None) -> L.Trainer:
    gpu = torch.cuda.is_available()
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINTS,
        filename="best",
        monitor="val_auc",
        mode="max",
        save_last=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        max_epochs=cfg.train.epochs,
        accelerator="auto",
        devices=cfg.train.devices,
        strategy="ddp" if cfg.train.ddp else "auto",
        precision="16-mixed" if gpu else "32-true",
        deterministic=True if not gpu else "warn",
        callbacks=[checkpoint, EpochReport(run_dir), *(callbacks or [])],
        logger=False,
        enable_progress_bar=console.is_terminal,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )


def _quiet_lightning() -> None:
    """Keep Lightning's banners and tips out of the study's log; warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def train(cfg: Config, run_dir: Path, callbacks: list[Callback] | None = None) -> Path:
    """Train (or resume from run_dir/checkpoints/last.ckpt); return the best checkpoint's path."""
    _quiet_lightning()
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    data = prepare_run(cfg, run_dir)
    net = create_model(cfg.model, n_clinical=len(data.encoder.feature_names))
    module = BreastClassifier(net, cfg.train)
    last = run_dir / CHECKPOINTS / "last.ckpt"
    if last.is_file():
        console.print(f"resuming from {last}")
    trainer = trainer_for(cfg, run_dir, callbacks)
    trainer.fit(
        module,
        loader(data.train, cfg, train=True, sampler=data.sampler),
        loader(data.val, cfg),
        ckpt_path=last if last.is_file() else None,
    )
    return run_dir / CHECKPOINTS / "best.ckpt"


def load_run_config(run_dir: Path) -> Config:
    return load_config(run_dir / "config.toml")


def load_net(run_dir: Path, n_clinical: int, checkpoint: str = "best.ckpt"):
    """The trained network from a checkpoint, loaded with torch.load(weights_only=True)."""
    cfg = load_run_config(run_dir)
    model_cfg = cfg.model.model_copy(update={"pretrained": "none"})  # the weights come from the checkpoint
    net = create_model(model_cfg, n_clinical)
    state = torch.load(run_dir / CHECKPOINTS / checkpoint, map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    return net.eval()
