"""A self-supervised start against a random start, on identical splits and epochs.

    python benchmarks/ssl_start.py [--breasts 400] [--image-size 640 512] [--preset highres]
                                   [--pretrain-epochs 20] [--epochs N] [--root DIR]

The cohort is made and split as in benchmarks/highres.py. `mammofuse pretrain` learns the preset's
backbone from the training split's images (no label); the preset is then trained twice on the same
split, from random weights and from the pretrained file. Printed: the validation AUC per epoch of both,
the first epoch at which the pretrained start reaches the random start's final validation AUC, and both
test AUCs beside the oracle's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from _common import bench_parser
from highres import measure, prepare

from mammofuse.cli import main


def main_() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=400)
    parser.add_argument("--image-size", type=int, nargs=2, default=(640, 512))
    parser.add_argument("--preset", default="highres")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    args = parser.parse_args()
    config = prepare(args.root, args.breasts, tuple(args.image_size))
    folder = config.parent
    weights = folder / "ssl" / f"{Path(args.preset).stem}.pt"
    start = time.perf_counter()
    argv = ["pretrain", str(config), "--preset", args.preset, "--epochs", str(args.pretrain_epochs)]
    assert main([*argv, "--out", str(weights)]) == 0
    pretrain_s = time.perf_counter() - start

    presets = {}
    for start_from in ("none", str(weights)):
        name = "random" if start_from == "none" else "ssl"
        preset = folder / f"{Path(args.preset).stem}-{name}.toml"
        preset.write_text(f'extends = "{args.preset}"\n[model]\npretrained = "{start_from}"\n')
        presets[name] = preset
    rows = [measure(config, str(p), args.epochs) for p in presets.values()]
    curves = {
        name: pd.read_csv(folder / "work" / "runs" / p.stem / "epochs.csv")["val_auc"].to_numpy()
        for name, p in presets.items()
    }
    table = pd.DataFrame({f"val AUC, {name} start": c for name, c in curves.items()})
    table.index = table.index + 1
    print(table.round(3).to_string(index_names=False))
    target = curves["random"][-1]
    reached = [i + 1 for i, v in enumerate(curves["ssl"]) if v >= target]
    epochs = len(curves["random"])
    print(
        f"random start's final validation AUC {target:.3f}: reached by the pretrained start at epoch "
        f"{reached[0] if reached else 'never'} of {epochs}"
        + (f" ({reached[0] / epochs:.2f} of the epochs)" if reached else "")
    )
    print(f"pretraining: {args.pretrain_epochs} epochs in {pretrain_s:.0f} s")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main_()
