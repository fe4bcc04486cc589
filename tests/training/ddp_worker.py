"""Run by tests/training/test_ddp.py: one epoch of the real BreastClassifier under DDP on the CPU (gloo,
2 processes), through `fit`'s loaders (EpochStream), on an odd number of validation breasts so the
distributed sampler pads with a repeat. Each process writes the validation scores it computed itself and the
training breasts it saw (OUT/rank<r>.pt); process 0 also writes the validation AUC the module logged
(OUT/logged.json).

    python tests/training/ddp_worker.py OUT
"""

import json
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import Dataset

from mammofuse.config import ModelConfig, TrainConfig
from mammofuse.data.balance import EpochShuffle
from mammofuse.data.epochs import EpochStream
from mammofuse.models import create_model
from mammofuse.training.module import BreastClassifier


class Breasts(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 2, 1, 32, 32, generator=g)
        self.labels = (torch.rand(n, generator=g) < 0.4).long()
        self.images[self.labels == 1] += 0.02  # a faint signal: scores differ, AUC is not 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        cc, mlo = self.images[i]
        return {
            "cc": cc,
            "mlo": mlo,
            "clinical": torch.zeros(2),
            "label": self.labels[i],
            "key": str(i),
            "row": i,
        }


class Recording(BreastClassifier):
    """The module as trained, keeping the training breasts this process saw and its own validation scores."""

    def on_train_epoch_start(self) -> None:
        self.trained: list[torch.Tensor] = []

    def training_step(self, batch: dict, i: int) -> torch.Tensor:
        self.trained.append(batch["row"])
        return super().training_step(batch, i)

    def on_validation_epoch_start(self) -> None:
        self.mine: list[tuple[torch.Tensor, ...]] = []

    def validation_step(self, batch: dict, i: int) -> None:
        super().validation_step(batch, i)
        self.mine.append(self._val[-1])


def main(out: Path) -> None:
    L.seed_everything(0, verbose=False)
    net = create_model(ModelConfig(backbone="tiny_cnn", pretrained="none", grey="adapt"), 2)
    module = Recording(net, TrainConfig(optimizer="adamw", lr=0.01))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    train = EpochStream(Breasts(64, 0), 8, EpochShuffle(64, seed=0))
    trainer.fit(module, train, EpochStream(Breasts(45, 1), 8))
    probs, labels, rows = (torch.cat(parts) for parts in zip(*module.mine))
    scores = {"probs": probs, "labels": labels, "rows": rows, "trained": torch.cat(module.trained)}
    torch.save(scores, out / f"rank{trainer.global_rank}.pt")
    if trainer.global_rank == 0:
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        (out / "logged.json").write_text(json.dumps(logged))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
