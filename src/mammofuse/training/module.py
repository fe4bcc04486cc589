"""The LightningModule: loss, optimiser, schedule and metrics around a plain TwoViewNet."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from mammofuse.config import TrainConfig
from mammofuse.data.clinical import AuxiliaryTargets
from mammofuse.evaluation.metrics import auc
from mammofuse.imaging.cache import QUANT
from mammofuse.models import TwoViewNet, inference_device, positive_probability


class BreastClassifier(L.LightningModule):
    def __init__(
        self,
        net: TwoViewNet,
        cfg: TrainConfig,
        auxiliary: AuxiliaryTargets | None = None,
        raw: bool = False,
        augmentation: nn.Module | None = None,
    ) -> None:
        """`raw`: batches arrive as stored (uint16) and become brightness here, on the device, where
        `augmentation` (data.balance.BatchAugmentation) then transforms the training batches."""
        super().__init__()
        self.raw, self.augmentation = raw, augmentation
        self.net = net.to(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU
        self.cfg = cfg
        # Auxiliary heads live here, not in the network: they serve training only, so the network that
        # is evaluated, explained and bundled is the same with or without them.
        self.targets = auxiliary
        heads: list[nn.Module] = []
        if auxiliary is not None:
            heads = [nn.Linear(net.image_features, auxiliary.outputs(c)) for c in auxiliary.weights]
        self.auxiliary = nn.ModuleList(heads)
        # train.ema_epochs: a moving average of the network's weights, updated after every optimiser step.
        # Validation scores it and the checkpoints hold it (`Run.read_net` reads it): the kept epoch,
        # evaluation, Grad-CAM and the bundle use the average. (Not Lightning's WeightAveraging callback: it
        # writes the average only into full checkpoints, so best.ckpt, weights only, would hold the live
        # weights of an epoch chosen by the average's AUC.) torch's AveragedModel holds it and its update
        # count (`n_averaged`, in the checkpoints); EmaStep updates it.
        self.ema = EmaStep(cfg.ema_epochs) if cfg.ema_epochs else None
        self.average = None
        if self.ema is not None:
            self.average = AveragedModel(self.net, use_buffers=True)
            self.average.requires_grad_(False)  # updated by hand, never by the optimiser
        self.updates = 0  # of the average, so far: n_averaged, on the host
        self.loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self._val: list[tuple[torch.Tensor, ...]] = []  # (probabilities, labels, rows) per batch
        self._train: list[tuple[torch.Tensor, ...]] = []  # this epoch's training scores, the same

    def forward(self, batch: dict) -> torch.Tensor:
        return self.scores(batch)[0]  # (B, 2)

    def scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, 2), image features (B, 2C)) of a batch: by the network being trained, or outside
        training by the weights' average where there is one."""
        cc, mlo = (batch[v].contiguous(memory_format=torch.channels_last) for v in ("cc", "mlo"))
        return self.scoring_net.scores(cc, mlo, batch["clinical"])

    @property
    def scoring_net(self) -> TwoViewNet:
        if self.average is not None and not self.training:
            return self.average.module  # type: ignore[return-value]
        return self.net

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        if self.raw:
            for view in ("cc", "mlo"):
                x = batch[view].float() * (1.0 / QUANT)  # on the device: half the bytes of float32 moved
                if self.augmentation is not None and self.trainer.training:
                    x = self.augmentation(x)
                batch[view] = x
        return batch

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.cfg.freeze_backbone_epochs
        for p in self.net.backbone_parameters():
            p.requires_grad_(not frozen)

    def training_step(self, batch: dict, _: int) -> torch.Tensor:
        logits, features = self.scores(batch)
        loss = self.loss(logits, batch["label"])
        metrics = {"train_acc": (logits.argmax(1) == batch["label"]).float().mean()}
        if self.targets is not None:
            metrics["train_aux_loss"] = self.auxiliary_loss(features, batch["auxiliary"])
            loss = loss + metrics["train_aux_loss"]
        metrics["train_loss"] = loss
        size = len(batch["label"])
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self._train.append(_scored(logits, batch))
        return loss

    def on_train_start(self) -> None:
        if self.ema is not None:
            self.ema.steps_per_epoch = float(self.trainer.num_training_batches)

    def on_train_batch_end(self, outputs: object, batch: dict, batch_idx: int) -> None:
        if self.ema is not None and self.average is not None:
            self.ema(self.average.module, self.net, self.updates)
            self.average.n_averaged += 1  # on the device: nothing read back
            self.updates += 1

    def auxiliary_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Weighted sum of the auxiliary losses (cross-entropy for a category, squared error for a
        standardised number), each the mean over the breasts whose target is known (none known: 0).
        Masked rather than selected, so the step never waits for the device to say which are known."""
        assert self.targets is not None
        total = features.new_zeros(())
        for j, (column, weight) in enumerate(self.targets.weights.items()):
            known = ~torch.isnan(targets[:, j])
            y, out = targets[:, j].nan_to_num(0.0), self.auxiliary[j](features).float()
            if column in self.targets.categories:
                each = nn.functional.cross_entropy(out, y.long(), reduction="none")
            else:
                each = (out[:, 0] - y) ** 2
            total = total + weight * (each * known).sum() / known.sum().clamp(min=1)
        return total

    def validation_step(self, batch: dict, _: int) -> None:
        logits = self(batch)
        loss = self.loss(logits, batch["label"])
        self.log("val_loss", loss, on_epoch=True, batch_size=len(batch["label"]), sync_dist=True)
        self._val.append(_scored(logits, batch))

    def on_validation_epoch_end(self) -> None:
        """Validation AUC and accuracy, and the AUC of the epoch's training batches as they were scored
        while training (augmented, dropout on): with the validation AUC, the overfitting picture. Under
        DDP each process scored part of the breasts: the scores are gathered and one AUC computed over
        all of them (a mean of per-process AUCs is not the AUC), each breast once."""
        probs, labels = self._gathered(self._val, once=True)
        value = auc(labels, probs)
        self.log("val_auc", 0.5 if np.isnan(value) else value, sync_dist=True)  # equal on every process
        self.log("val_acc", float(np.mean((probs >= 0.5) == labels)), sync_dist=True)
        if self._train:  # validation runs after the epoch's training batches (balancing copies count)
            probs, labels = self._gathered(self._train, once=False)
            self.log("train_auc", auc(labels, probs), sync_dist=True)

    def _gathered(self, batches: list[tuple[torch.Tensor, ...]], once: bool) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, labels) of the collected batches from every process (the list is emptied);
        `once`: each breast once (a distributed sampler pads the last batches with repeats)."""
        probs, labels, rows = (torch.cat([t.to(self.device) for t in parts]) for parts in zip(*batches))
        batches.clear()
        if self.trainer.world_size > 1:
            probs, labels, rows = (self._from_all(t) for t in (probs, labels, rows))
        probs, labels, rows = (t.cpu() for t in (probs, labels, rows))  # the epoch's one wait for the device
        if once:
            keep = np.unique(rows.numpy(), return_index=True)[1]
            probs, labels = probs[keep], labels[keep]
        return probs.numpy(), labels.numpy()

    def _from_all(self, values: torch.Tensor) -> torch.Tensor:
        """One process's tensor (N,) -> every process's, concatenated (world * N,)."""
        gathered = self.all_gather(values)
        assert isinstance(gathered, torch.Tensor)
        return gathered.flatten()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed run updates its weights the way this session's hardware does, and its weights' average
        goes on from the updates it had (read from the checkpoint, on the CPU)."""
        for state in checkpoint.get("optimizer_states", []):
            on_this_hardware(state, self.trainer.strategy.root_device)
        self.updates = int(checkpoint["state_dict"].get("average.n_averaged", 0))

    def configure_optimizers(self):
        groups = [
            {"params": self.net.backbone_parameters(), "lr": self.cfg.lr * self.cfg.backbone_lr_mult},
            {"params": [*self.net.head_parameters(), *self.auxiliary.parameters()], "lr": self.cfg.lr},
        ]
        opt: torch.optim.Optimizer
        fused = fused_on(self.device)  # Lightning has moved the module to its device by now
        if self.cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused)
        else:
            opt = torch.optim.SGD(
                groups,
                lr=self.cfg.lr,
                momentum=self.cfg.momentum,
                weight_decay=self.cfg.weight_decay,
                fused=fused,
            )
        if self.cfg.scheduler == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.epochs)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt


def fused_on(device: torch.device) -> bool | None:
    """Whether the optimizer updates every weight in one fused kernel: on a GPU, yes (a handful of kernel
    launches per step instead of a loop of them; under fp16 loss scaling the overflow check then stays on
    the GPU, where the scaler's own check makes the CPU wait every step); elsewhere torch's default, so
    the CPU's numbers stay as they were."""
    return True if device.type == "cuda" else None


def on_this_hardware(optimizer_state: dict, device: torch.device) -> dict:
    """A saved optimizer state, set to update the weights the way `device` does (`fused_on`): torch restores
    an optimizer's flags with its state, so a GPU run resumed on the CPU would otherwise go on with the fused
    kernel (other numbers than the CPU's default), and a CPU run resumed on a GPU without it."""
    for group in optimizer_state["param_groups"]:
        group["fused"] = fused_on(device)
    return optimizer_state


def _scored(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, ...]:
    """(probabilities, labels, rows) of one batch for the epoch's AUC, left where they are: a copy to the
    CPU here would make every step wait for the GPU; `_gathered` moves the epoch's scores once."""
    return positive_probability(logits).detach(), batch["label"], torch.as_tensor(batch["row"])


def predict(
    net: TwoViewNet, loader, device: torch.device | str | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(probabilities of label 1, labels, keys) for every breast the loader serves, in order; on `device`
    (default: `inference_device`, the GPU where there is one)."""
    device = device or inference_device()
    net.eval().to(device)
    probs, labels, keys = [], [], []
    with torch.no_grad():
        for batch in loader:
            x = (batch[name].to(device, non_blocking=True) for name in ("cc", "mlo", "clinical"))
            logits = net(*x)
            probs.append(positive_probability(logits).cpu())
            labels.append(batch["label"])
            keys += list(batch["key"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy(), keys


class EmaStep:
    """The weights' moving average, one update, after every optimiser step: average <- decay x average +
    (1 - decay) x weights, where 1 / (1 - decay) is the horizon, `epochs` x the steps of an epoch. The
    first update copies the weights; over the next the decay is lower, (1 + n) / (10 + n) after n updates
    (as timm's ModelEmaV2 warms up), so the random start fades fast. Batch norm's counters are the network's
    own. On the device, without waiting for it: n is counted on the host (torch's
    AveragedModel.update_parameters reads its count back from the device twice an update)."""

    def __init__(self, epochs: float) -> None:
        self.epochs, self.steps_per_epoch = epochs, 1.0

    @torch.no_grad()
    def __call__(self, average: nn.Module, net: nn.Module, n: int) -> None:
        horizon = max(self.epochs * self.steps_per_epoch, 1.0)
        decay = min((1 + n) / (10 + n), 1 - 1 / horizon) if n else 0.0
        averaged, current = ([*m.parameters(), *m.buffers()] for m in (average, net))
        weights = [i for i, a in enumerate(averaged) if a.is_floating_point()]
        counters = [i for i, a in enumerate(averaged) if not a.is_floating_point()]
        if weights:
            torch._foreach_lerp_([averaged[i] for i in weights], [current[i] for i in weights], 1 - decay)
        if counters:
            torch._foreach_copy_([averaged[i] for i in counters], [current[i] for i in counters])
