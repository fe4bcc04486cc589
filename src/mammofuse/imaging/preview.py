"""A contact sheet of preprocessed pairs, so a person can look at what the model will see."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from mammofuse.domain import VIEWS
from mammofuse.imaging.cache import load_entry


def contact_sheet(table: pd.DataFrame, n: int = 8, flagged: dict[str, str] | None = None) -> Figure:
    """CC and MLO side by side for `n` breasts: first those with an image `flagged` (its path -> what to
    look at: a warning of preprocessing, named under it), then half of the rest positive where the cohort
    has enough (the first of each class, in table order); cases named by their row in the table, never by
    patient."""
    flagged = flagged or {}
    paths = [v.column("path") for v in VIEWS]
    marked = table[paths].isin(list(flagged)).any(axis=1)
    rows, rest = table[marked].head(n), table[~marked]
    positives = rest[rest["label"] == 1].head((n - len(rows)) // 2)
    others = rest[rest["label"] != 1].head(n - len(rows) - len(positives))
    rows = pd.concat([rows, positives, others]).sort_index()
    cols = 4  # two breasts (CC, MLO each) per line
    lines = (len(rows) + 1) // 2
    fig = Figure(figsize=(2.2 * cols, 3.2 * max(lines, 1)), layout="constrained")
    axes = fig.subplots(max(lines, 1), cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (number, row) in enumerate(rows.iterrows()):
        for j, view in enumerate(VIEWS):
            ax = axes[i // 2, (i % 2) * 2 + j]
            ax.imshow(load_entry(row[view.column("cache")]), cmap="gray", vmin=0, vmax=1)
            name = f"row {int(number) + 1} {row['side']} {view.value}"
            said = flagged.get(row[view.column("path")])
            ax.set_title(f"{name}  label {row['label']}" + (f"\n{said}" if said else ""), fontsize=9)
    return fig
