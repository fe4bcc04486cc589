"""Training throughput on whatever this machine has (the GPU when there is one), side by side:

1. one in-memory training step (a fixed batch already on the device): fp32, the precision `train.precision
   = "auto"` picks, and (GPU, or --compile) torch.compile'd with channels_last;
2. the input pipeline alone: batches from the cache to the device, augmented, with no model (the loader
   path: each image augmented in the loader's processes; the device path: uint16 batches moved, then
   augmented as a batch where the model is);
3. with loader processes, how long an epoch waits for its first batch after a pause standing in for the last
   epoch's validation: a DataLoader with persistent processes vs `fit`'s EpochStream, which reads on into the
   next epoch;
4. on a GPU, how often the batch augmentation, a training step and an update of the weights' average
   (`train.ema_epochs`) make the CPU wait for the GPU;
5. `mammofuse train`'s real epochs after the first through each pipeline, compiled like the best in-memory
   step on a GPU (or with --compile): its training batches (the Lightning loop, the loader's first batch of
   each epoch included), and whole epochs (validation and checkpoints included).

Printed as breasts per second and as ratios to the fastest in-memory step (goal on an H100/H200: real
training >= 0.8 of it; on a 2-core CPU: no slower than before). On a GPU, how busy it is (the share of time
a kernel ran, `nvidia-smi dmon`'s "sm") is sampled every 100 ms and averaged over the same spans as each
figure, start-up and compilation left out (goal >= 80 %).

    python benchmarks/bench_train.py [--breasts 160] [--size 512 256] [--batch 16] [--backbone resnet18]
                                     [--epochs 2] [--workers 0 2] [--compile] [--paths device loader]
                                     [--root DIR]
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import subprocess
import threading
import time
import warnings

import torch
from _common import bench_parser, prepared_data
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from mammofuse.data.balance import BatchAugmentation, EpochShuffle, standard_augmentation
from mammofuse.data.epochs import EpochStream
from mammofuse.imaging.cache import QUANT
from mammofuse.models import create_model
from mammofuse.training.module import BreastClassifier, fused_on
from mammofuse.training.run import compiled, precision_for

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def in_memory(
    cfg, n_clinical: int, batch: dict, device: torch.device, precision: str, compile_: bool, steps: int
):
    """Breasts/s of forward + loss + backward + AdamW on one fixed batch already on the device."""
    net = create_model(cfg.model, n_clinical).to(device).to(memory_format=torch.channels_last).train()
    if compile_:
        compiled(net)  # as training compiles it
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=fused_on(device))  # as training's
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    cc, mlo = (batch[v].to(device).contiguous(memory_format=torch.channels_last) for v in ("cc", "mlo"))
    clinical, label = batch["clinical"].to(device), batch["label"].to(device)

    def step() -> None:
        with torch.autocast(
            device.type, AUTOCAST.get(precision, torch.float32), enabled=precision in AUTOCAST
        ):
            loss = torch.nn.functional.cross_entropy(net.scores(cc, mlo, clinical)[0], label)  # as a step
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(3 if compile_ else 1):  # warm-up: kernels, allocator, compilation
        step()
    return timed_rate(step, steps, len(label), device)


def timed_rate(step, steps: int, per_step: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * per_step / (time.perf_counter() - start)


def pipeline(
    dataset, batch: int, workers: int, device: torch.device, augment: BatchAugmentation | None
) -> float:
    """Breasts/s of batches reaching the device (and, raw, augmented there), no model."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    it = iter(loader)
    next(it)  # workers started
    n = min(len(loader) - 1, 20)
    start = time.perf_counter()
    for _ in range(n):
        b = next(it)
        for view in ("cc", "mlo"):
            x = b[view].to(device, non_blocking=True)
            if augment is not None:
                x = augment(x.float() * (1 / QUANT))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - start)


def first_batch_waits(
    dataset, batch: int, workers: int, pause: float = 0.3, epochs: int = 3
) -> dict[str, float]:
    """Mean seconds from an epoch's start to its first batch, after a pause standing in for the previous
    epoch's validation and checkpoint: a DataLoader with persistent processes (starts an epoch when asked),
    and `fit`'s EpochStream (reads the next epoch while one ends), the same order both ways."""
    plain = DataLoader(
        dataset,
        batch_size=batch,
        sampler=EpochShuffle(len(dataset), 0),
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    loaders = {
        "DataLoader": plain,
        "EpochStream": EpochStream(dataset, batch, EpochShuffle(len(dataset), 0), num_workers=workers),
    }
    waits = {}
    for name, loader in loaders.items():
        waited = []
        for epoch in range(epochs + 1):  # the first epoch starts the processes: left out
            loader.sampler.set_epoch(epoch)  # as Lightning does
            start = time.perf_counter()
            it = iter(loader)
            next(it)
            waited.append(time.perf_counter() - start)
            for _ in it:
                pass
            time.sleep(pause)
        waits[name] = sum(waited[1:]) / epochs
        if isinstance(loader, EpochStream):
            loader.close()
    return waits


class GpuBusy:
    """How busy the GPU is (the share of time a kernel ran: nvidia-smi's utilization.gpu, `dmon`'s "sm"),
    sampled every 100 ms in a thread, each sample stamped with time.time(): through NVML
    (torch.cuda.utilization, with nvidia-ml-py installed), else by asking nvidia-smi; nothing where neither
    answers. Started once the loader's processes are forked: a thread running beside a fork can hang the
    child."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        read = self._reader()
        while read is not None and not self._stop.wait(0.1):
            with contextlib.suppress(Exception):
                self.samples.append((time.time(), read()))

    @staticmethod
    def _reader():
        if torch.cuda.is_available():
            with contextlib.suppress(Exception):  # no nvidia-ml-py, no NVML
                torch.cuda.utilization()
                return lambda: float(torch.cuda.utilization())
        if shutil.which("nvidia-smi") is None:
            return None
        gpu = "0"  # nvidia-smi counts every GPU of the machine: name torch's by its UUID
        with contextlib.suppress(Exception):
            uuid = str(torch.cuda.get_device_properties(0).uuid)
            gpu = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", gpu]
        return lambda: float(subprocess.run(query, capture_output=True, text=True, check=True).stdout)


def mean_within(samples: list[tuple[float, float]], spans: list[tuple[float, float]]) -> float | None:
    inside = [busy for when, busy in samples if any(a <= when <= b for a, b in spans)]
    return sum(inside) / len(inside) if inside else None


def host_waits(fn) -> int:
    """How many times `fn` makes the CPU wait for the GPU (CUDA's sync debug mode): each wait empties the
    queue of GPU work, so a training step should have none."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen)


class EpochTimes(Callback):
    """When each epoch's training batches ran (from the epoch's start, its loader's first batch included, to
    its last step done on the device) and when the whole epoch did (validation and checkpoints included),
    as time.time() to match the GPU's busy samples (taken from the second epoch on); how long each epoch
    waited for its first batch; and how many breasts each epoch trained on."""

    def __init__(self, busy: GpuBusy) -> None:
        self.busy = busy
        self.training: list[tuple[float, float]] = []
        self.whole: list[tuple[float, float]] = []
        self.first_batch: list[float] = []
        self.breasts: list[int] = []

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == 1:  # the loader's processes (persistent) are forked by now
            self.busy.start()
        self.start = time.time()
        self.breasts.append(0)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first_batch.append(time.time() - self.start)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.breasts[-1] += len(batch["label"])
        if batch_idx == trainer.num_training_batches - 1:
            if module.device.type == "cuda":
                torch.cuda.synchronize()  # once an epoch: the queued steps are done
            self.training.append((self.start, time.time()))

    def on_train_epoch_end(self, trainer, module) -> None:  # Lightning calls it after validation
        self.whole.append((self.start, time.time()))


def real_training(cfg, epochs: int, augment_on: str, workers: int, compile_: bool) -> dict[str, float]:
    """`mammofuse train`'s epochs after the first (start-up and the first epoch's compilation left out):
    breasts/s of the training batches and of the whole epochs, the GPU's busy % over each, and the mean
    seconds an epoch waited for its first batch and spent after its training batches (validation,
    checkpoints), and how long the first epoch took (compilation included)."""
    from mammofuse.runs import Work
    from mammofuse.training.run import fit

    run_cfg = cfg.model_copy(deep=True)
    run_cfg.train.epochs, run_cfg.train.augment_on, run_cfg.train.num_workers = epochs, augment_on, workers
    run_cfg.train.compile = compile_
    work = Work(cfg.work_dir)
    run = work.run(f"bench-{augment_on}-{workers}")
    shutil.rmtree(run.dir, ignore_errors=True)
    busy = GpuBusy()
    times = EpochTimes(busy)
    try:
        fit(run_cfg, run, work.read_splits(), callbacks=[times])
    finally:
        busy.stop()
    first = 1 if epochs > 1 else 0
    breasts = sum(times.breasts[first:])
    out = {
        "first epoch": times.whole[0][1] - times.whole[0][0],
        "first batch": sum(times.first_batch[first:]) / len(times.first_batch[first:]),
        "after": sum(w[1] - t[1] for t, w in zip(times.training[first:], times.whole[first:]))
        / len(times.whole[first:]),
    }
    for part, spans in (("training", times.training[first:]), ("whole", times.whole[first:])):
        out[part] = breasts / sum(b - a for a, b in spans)
        mean = mean_within(busy.samples, spans)
        if mean is not None:
            out[f"{part} busy"] = mean
    return out


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=160)
    parser.add_argument("--image-size", type=int, nargs=2, default=[1024, 832], help="generated image size")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 256], help="preprocessed size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="loader processes to compare")
    parser.add_argument("--compile", action="store_true", help="also time a compiled step on the CPU")
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=["device", "loader"],
        default=["device", "loader"],
        help="where `mammofuse train`'s real epochs augment (each a run; compiled, each compiles anew)",
    )
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    settings = {"mode": "breast", "size": tuple(args.size)}
    cfg, data = prepared_data(args.root, args.breasts, tuple(args.image_size), settings)
    cfg.model = cfg.model.model_copy(update={"backbone": args.backbone, "pretrained": "none"})
    cfg.train.batch_size = args.batch
    n_clinical = len(data.encoder.feature_names)
    print(f"{name}; {args.backbone}, two views {args.size[0]}x{args.size[1]}, batch {args.batch}")

    # the same breasts both ways: augmented image by image in the loader, or served as stored and augmented
    # as a batch on the device
    per_image = copy.copy(data.train)
    per_image.raw, per_image.transform = False, standard_augmentation(cfg.data)
    raw = copy.copy(data.train)
    raw.raw, raw.transform = True, None

    batch = next(iter(DataLoader(raw, batch_size=args.batch)))  # a full training batch, as the net sees it
    for view in ("cc", "mlo"):
        batch[view] = batch[view].float() * (1 / QUANT)
    chosen = precision_for(cfg.train)
    rates = {"fp32": in_memory(cfg, n_clinical, batch, device, "32-true", False, args.steps)}
    if chosen != "32-true":
        rates[chosen] = in_memory(cfg, n_clinical, batch, device, chosen, False, args.steps)
    if device.type == "cuda" or args.compile:
        rates[f"{chosen} + compile"] = in_memory(cfg, n_clinical, batch, device, chosen, True, args.steps)
    best = max(rates.values())
    for what, rate in rates.items():
        print(f"in-memory step, {what:22s} {rate:8.1f} breasts/s  ({rate / best:.2f} of the best)")

    augment = BatchAugmentation(cfg.data).to(device)
    for workers in args.workers:
        loader_rate = pipeline(per_image, args.batch, workers, device, None)
        device_rate = pipeline(raw, args.batch, workers, device, augment)
        print(
            f"input pipeline, {workers} workers: loader path {loader_rate:8.1f} breasts/s | device path "
            f"{device_rate:8.1f} breasts/s ({device_rate / loader_rate:.2f}x)"
        )

    for workers in [w for w in args.workers if w > 0]:
        waits = first_batch_waits(raw, args.batch, workers)
        print(
            f"an epoch's first batch after validation, {workers} workers: DataLoader (persistent processes) "
            f"{1000 * waits['DataLoader']:.0f} ms | EpochStream (fit's) {1000 * waits['EpochStream']:.0f} ms"
        )

    if device.type == "cuda":
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        module = BreastClassifier(create_model(cfg.model, n_clinical), cfg.train).to(device)
        waits = {
            "batch augmentation": host_waits(lambda: augment(batch["cc"])),
            "training step": host_waits(lambda: module.training_step(batch, 0).backward()),
        }
        averaging = BreastClassifier(
            create_model(cfg.model, n_clinical), cfg.train.model_copy(update={"ema_epochs": 1.0})
        ).to(device)
        averaging.on_train_batch_end(None, batch, 0)  # the first update copies the weights
        waits["the weights' average (train.ema_epochs)"] = host_waits(
            lambda: averaging.on_train_batch_end(None, batch, 0)
        )
        print("times the CPU waits for the GPU: " + ", ".join(f"{k} {v}" for k, v in waits.items()))

    compile_ = device.type == "cuda" or args.compile  # as the best in-memory step
    for workers in args.workers:
        for where in args.paths:  # the device path first: the figure the goal is about
            measured = real_training(cfg, args.epochs, where, workers, compile_)
            for part, what in (("training", "training batches"), ("whole", "whole epochs")):
                rate = measured[part]
                busy = f", GPU busy {measured[f'{part} busy']:.0f} %" if f"{part} busy" in measured else ""
                print(
                    f"mammofuse train, augment on the {where}, {workers} workers, {what:16s} {rate:8.1f} "
                    f"breasts/s ({rate / best:.2f} of the best in-memory step{busy})"
                )
            print(
                f"  an epoch waited {1000 * measured['first batch']:.0f} ms for its first batch and spent "
                f"{1000 * measured['after']:.0f} ms after its training batches (validation, checkpoints); "
                f"the first epoch took {measured['first epoch']:.1f} s"
            )
    if compile_:
        from torch._dynamo.utils import counters

        cache = counters["inductor"]
        print(
            f"compiled graphs from inductor's cache: {cache['fxgraph_cache_hit']} found, "
            f"{cache['fxgraph_cache_miss']} compiled"
        )


if __name__ == "__main__":
    main()
