"""`mammofuse pretrain`: self-supervised pretraining of a backbone on mammograms, no label read.

Hospitals hold far more unlabelled mammograms than labelled cases, and ImageNet weights need a download
that a hospital machine may not have. SimCLR [Chen et al. 2020] through lightly (its NT-Xent loss and
projection head): two random views of the same crop are pulled together, views of other crops pushed
apart. The views suit mammograms: crops at the working resolution (no resizing: calcifications keep their
size; the patch model's tile, or half the image for a whole-image model) that hold breast, flips,
brightness / contrast / gamma jitter, a little blur and noise; no colour jitter, no greyscale conversion.

The images are the work folder's training split (preprocessed as the preset says), or every mammogram in
an unlabelled archive folder (`--images DIR`). The result is the backbone as a whole classification
network's state_dict (what `model.pretrained = FILE` loads) with a card (method, epochs, images, a hash
of the images): in the file and beside it as JSON. Each finished epoch is checkpointed (FILE.resume.ckpt):
an interrupted run, or a rerun with more epochs, continues from there to the result of one straight run.
Each image's crop and views are drawn from (seed, epoch, image), so the result does not depend on the
number of loader processes either; they read the next epoch while one ends (data.epochs.EpochStream).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn
from torch.utils.data import Dataset

from mammofuse import __version__
from mammofuse.cohort.images import find_images
from mammofuse.config import Config, ConfigError
from mammofuse.data.balance import EpochShuffle, item_seed
from mammofuse.data.epochs import EpochItems, EpochStream
from mammofuse.data.splits import TRAIN
from mammofuse.domain import VIEWS
from mammofuse.imaging.cache import entry_record, load_entry
from mammofuse.imaging.preprocess import preprocess_cohort
from mammofuse.models.backbones import Backbone
from mammofuse.models.tiles import CONTENT
from mammofuse.problems import EXCLUDED, DataError, Problems
from mammofuse.runs import Work
from mammofuse.storage import replace_text, replaced
from mammofuse.training.module import fused_on, on_this_hardware
from mammofuse.training.run import loader_options
from mammofuse.ui import console, counted, progress, show_problems

METHOD = "SimCLR (lightly NTXentLoss, temperature 0.2; SimCLRProjectionHead 2 layers to 64)"
TEMPERATURE = 0.2
VIEW_DRAWS = "per image from (seed, epoch, image)"  # in the card: a resume drawn otherwise is not resumed
TRIES = 10  # random crops drawn to find one that is mostly breast


@dataclass(frozen=True)
class PretrainOptions:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    crop: tuple[int, int] | None = None  # default: the tile (patch model), else half the image


class Views(Dataset):
    """Each item, keyed (epoch, index): two augmented views (2, 1, h, w) of one random crop of a
    preprocessed image, drawn from a generator seeded by (seed, epoch, index)."""

    def __init__(self, entries: list[str], crop: tuple[int, int], seed: int) -> None:
        self.entries, self.crop, self.seed = entries, crop, seed

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, i = key
        draws = torch.Generator().manual_seed(item_seed(self.seed, epoch, i, len(self.entries)))
        img = torch.from_numpy(load_entry(self.entries[i]))  # (H, W), [0, 1]
        patch = self._crop(img, draws)
        return torch.stack([augment(patch, draws), augment(patch, draws)])[:, None]

    def _crop(self, img: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
        """A crop of the working size that is mostly breast (the best of a few draws)."""
        h, w = min(self.crop[0], img.shape[0]), min(self.crop[1], img.shape[1])
        best, best_fill = img[:h, :w], -1.0
        for _ in range(TRIES):
            y = int(torch.randint(0, img.shape[0] - h + 1, (), generator=draws))
            x = int(torch.randint(0, img.shape[1] - w + 1, (), generator=draws))
            patch = img[y : y + h, x : x + w]
            fill = float((patch > CONTENT).float().mean())
            if fill > best_fill:
                best, best_fill = patch, fill
            if fill >= 0.5:
                break
        return best


def augment(patch: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
    """One view of a grey patch (h, w) in [0, 1]: flips, intensity jitter, sometimes blur, noise."""

    def uniform(low: float, high: float) -> float:
        return float(torch.empty(()).uniform_(low, high, generator=draws))

    out = patch
    if uniform(0, 1) < 0.5:
        out = out.flip(-1)
    if uniform(0, 1) < 0.5:
        out = out.flip(-2)
    gamma, contrast, brightness = uniform(0.7, 1.4), uniform(0.7, 1.3), uniform(-0.1, 0.1)
    out = ((out.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
    if uniform(0, 1) < 0.3:
        kernel = torch.tensor([0.25, 0.5, 0.25])
        out = nn.functional.conv2d(out[None, None], (kernel[:, None] * kernel[None])[None, None], padding=1)[
            0, 0
        ]
    out = out + 0.01 * torch.randn(out.shape, generator=draws)
    return out.clamp(0, 1) * (patch > 0)  # the background stays black, as preprocessing leaves it


def training_images(cfg: Config, images: Path | None) -> tuple[list[str], str]:
    """The cache entries to learn from and where they came from: the work folder's training split, or
    every usable mammogram under `images` (an unlabelled archive). Preprocessed with the run's settings;
    what cannot be used is reported, as `mammofuse preprocess` reports it."""
    problems = Problems()
    if images is None:
        work = Work(cfg.work_dir)
        work.check_cohort(cfg, ("images",))
        splits = work.read_splits()
        if "split" not in splits:
            raise DataError(
                f"{work.splits} holds cross-validation folds: every breast is some fold's test breast, so "
                "pretraining on them would show each fold's model its test images. Give --images DIR (an "
                "unlabelled archive), or pretrain on a single split (split.folds = 0)"
            )
        manifest, _ = work.read_manifest()
        train = splits[splits["split"] == TRAIN][["patient_id", "side"]]
        manifest = manifest.merge(train, on=["patient_id", "side"])
        source = f"training split of {work.dir} ({len(manifest)} breasts)"
    else:
        archive = cfg.images.model_copy(update={"root": images.resolve(), "source": "dicom", "table": None})
        records = find_images(archive, problems, progress("reading headers"))
        if not records:
            show_problems(problems, "files left out", "(not written: pretrain keeps no run folder)")
            left_out = counted(len(problems.of(EXCLUDED)), "file")
            raise DataError(f"{images}: no usable mammogram found ({left_out} left out)")
        # each image on its own (the views need not pair): the cache builds each file once
        manifest = pd.DataFrame(
            {
                "patient_id": r.patient_id,
                "side": r.side.value,
                **{v.column("path"): str(r.path) for v in VIEWS},
            }
            for r in records
        )
        source = f"archive {images.resolve()} ({len(records)} images)"
    table, _, _ = preprocess_cohort(
        manifest, cfg.preprocess, cfg.cache_dir, problems, progress("preprocessing")
    )
    if problems.items:
        show_problems(problems, "preprocessing problems", "(not written: pretrain keeps no run folder)")
    entries = sorted({path for v in VIEWS for path in table[v.column("cache")]})
    if not entries:
        raise DataError("no image to pretrain on is left after preprocessing")
    return entries, source


def images_hash(entries: list[str]) -> str:
    """What the images were: a hash of their cached arrays' checksums, in a fixed order."""
    crcs = sorted(str(entry_record(e)["crc32"]) for e in entries)
    return hashlib.sha256("\n".join(crcs).encode()).hexdigest()[:16]


SMALLEST_CROP = 32  # a backbone halves its input five times


def crop_size(cfg: Config, asked: tuple[int, int] | None) -> tuple[int, int]:
    """The crop: `asked` (--crop), or the patch model's tile, or half the image; no larger than the
    preprocessed image (a larger one would be the whole image, whatever the card said)."""
    h, w = cfg.preprocess.output_shape
    if asked is not None and min(asked) < SMALLEST_CROP:
        raise ConfigError(
            f"--crop {asked[0]} {asked[1]}: at least {SMALLEST_CROP}x{SMALLEST_CROP} pixels (the backbone "
            f"halves its input five times)"
        )
    if asked is None:
        asked = (cfg.model.tile,) * 2 if cfg.model.kind == "patches" else (h // 2, w // 2)
        asked = max(SMALLEST_CROP, asked[0]), max(SMALLEST_CROP, asked[1])
    return min(asked[0], h), min(asked[1], w)


def _shrunk(asked: tuple[int, int] | None, crop: tuple[int, int]) -> str:
    """' (--crop 500x500 is larger than the images: ...)' where the crop asked for was shrunk to them."""
    if asked is None or tuple(asked) == crop:
        return ""
    return f" (--crop {asked[0]}x{asked[1]} is larger than the preprocessed images: no more than they hold)"


def pretrain(cfg: Config, out: Path, options: PretrainOptions, images: Path | None = None) -> dict[str, Any]:
    """Pretrain cfg.model's backbone; write OUT (weights + card) and OUT.json (the card); return the card."""
    crop = crop_size(cfg, options.crop)  # a wrong --crop stops before the images are read
    entries, source = training_images(cfg, images)
    card: dict[str, Any] = {
        "method": METHOD,
        "backbone": cfg.model.backbone,
        "grey": cfg.model.grey,
        "start": cfg.model.pretrained,
        "epochs": options.epochs,
        "images": len(entries),
        "images_hash": images_hash(entries),
        "source": source,
        "crop": list(crop),
        "views": VIEW_DRAWS,
        "batch_size": options.batch_size,
        "lr": options.lr,
        "seed": options.seed,
        "mammofuse": __version__,
    }
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(options.seed)
    backbone = Backbone(cfg.model.backbone, cfg.model.pretrained, cfg.model.grey)
    head = SimCLRProjectionHead(backbone.out_channels, backbone.out_channels, 64)
    model = nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.lr, weight_decay=1e-4, fused=fused_on(device)
    )
    resume = Path(f"{out}.resume.ckpt")
    done, losses = _resume(resume, card, model, optimizer, device)
    criterion = NTXentLoss(temperature=TEMPERATURE)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    data = Views(entries, crop, options.seed)
    batch = min(options.batch_size, len(data))
    epochs = counted(options.epochs, "epoch")
    console.print(
        f"pretraining {cfg.model.backbone} by {METHOD.split(' (')[0]} on {len(entries)} images "
        f"({source}), crops {crop[0]}x{crop[1]}{_shrunk(options.crop, crop)}, {epochs} -> {out}"
        + (f"; resuming after epoch {done}" if done else "")
    )
    batches = EpochStream(  # the loader processes read the next epoch while one ends
        data,
        batch,
        order=EpochItems(EpochShuffle(len(data), options.seed)),
        drop_last=True,
        **loader_options(cfg),  # train.num_workers processes, pinned memory beside a GPU, as training's
    )
    try:
        for epoch in range(done, options.epochs):
            batches.sampler.set_epoch(epoch)
            model.train()
            total = torch.zeros((), dtype=torch.float64, device=device)  # summed there: no wait each step
            for views in progress(f"epoch {epoch + 1}/{options.epochs}")(batches, len(batches)):
                views = views.to(device, non_blocking=True)  # (B, 2, 1, h, w)
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):  # a GPU's fast path
                    z = [head(backbone.pool(backbone(views[:, k]))).float() for k in (0, 1)]
                loss = criterion(z[0], z[1])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach()
            losses.append(float(total) / max(1, len(batches)))
            console.print(f"epoch {epoch + 1:3d}/{options.epochs}  contrastive loss {losses[-1]:.4f}")
            _save(
                resume,
                {
                    "card": card,
                    "epoch": epoch + 1,
                    "losses": losses,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                },
            )
    finally:
        batches.close()
    card["losses"] = [round(x, 5) for x in losses]
    card["created"] = time.strftime("%Y-%m-%d %H:%M:%S")
    _save(out, {"state_dict": backbone.cpu().classifier_state(), "card": card})
    replace_text(Path(f"{out}.json"), json.dumps(card, indent=2))
    console.print(f'wrote {out} (card: {out}.json); use it with model.pretrained = "{out}"')
    return card


def _resume(
    path: Path, card: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
):
    """(epochs done, their losses) from a resume checkpoint made with the same settings (on any hardware);
    else (0, [])."""
    if not path.is_file():
        return 0, []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        console.print(f"[yellow]warning:[/] {path} cannot be read ({type(exc).__name__}); starting over")
        return 0, []
    same = {k: v for k, v in state["card"].items() if k != "epochs"} == {
        k: v for k, v in card.items() if k != "epochs"
    }
    if not same or state["epoch"] > card["epochs"]:
        console.print(f"{path}: made with other settings or more epochs; starting over")
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(on_this_hardware(state["optimizer"], device))
    return int(state["epoch"]), list(state["losses"])


def _save(path: Path, obj: dict[str, Any]) -> None:
    """torch.save whole or not at all: a kill mid-write leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced(path) as tmp:
        torch.save(obj, tmp)
