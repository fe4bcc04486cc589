"""Can the Grad-CAM maps be trusted? Two checks over every held-out breast (a run's test split; every breast
of a cross-validation, each by the fold model that never saw it), written beside the overlays.

1. Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): each map is made again
   by the same architecture with its weights drawn afresh. A map that hardly changes shows the image's
   structure (the breast's outline, its bright tissue), not what the model learnt. Measured per map as the
   Spearman rank correlation of the two maps over the breast's pixels. On a sample of the breasts, also
   the cascading form: the learnt weights replaced by re-drawn ones from the top down (the head, then the
   backbone's last block, and so on to the whole network), each stage's maps against the model's, over
   several draws of the random weights. The stage where the maps stop resembling the model's shows which
   learnt layers they rest on.
2. Localisation, where the tumours are marked (a regions CSV in the original images' pixels): the pointing
   game (Zhang et al. 2018: does the map's peak lie in the marked region?) against chance (a point drawn
   anywhere on the breast lies in the region with probability area(region) / area(breast)), and the share
   of the map's mass inside the region (Wang et al. 2020) against the region's share of the breast's area.
   The re-drawn network's maps are scored the same way: what a map that knows nothing reaches. So is the
   breast's own brightest spot (the breast tissue smoothed, no model at all; on an MLO without its pectoral
   muscle, the brightest part of most MLOs): a tumour is often the densest part of the breast, and a map's
   peak on it is worth what it adds to that rule.

Each mean carries a 95 % interval from the same stratified patient bootstrap as the metrics.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from mammofuse.cohort.tables import parse_number, read_rows
from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS, Side, View, parse_side, parse_view
from mammofuse.evaluation.metrics import N_BOOTSTRAP, patient_weights
from mammofuse.imaging.geometry import Geometry, breast_mask, to_output
from mammofuse.imaging.pectoral import pectoral_muscle
from mammofuse.models import TwoViewNet, create_model
from mammofuse.models.tiles import breast_share, cut_tiles
from mammofuse.problems import DataError, Problems

KEY_COLUMNS = ["patient_id", "side", "view"]
CIRCLE, BOX = ("x", "y", "radius"), ("x0", "y0", "x1", "y1")
INSENSITIVE = 0.5  # median rank correlation with the re-drawn network's maps from which the maps are doubted
RegionKey = tuple[str, Side, View]


@dataclass(frozen=True)
class Region:
    """A marked region in the original image's pixels: a box, or the ellipse inscribed in it (a circle)."""

    top: float
    left: float
    bottom: float
    right: float
    ellipse: bool

    def mask(self, g: Geometry) -> np.ndarray:
        """(H, W) bool over the model's input: where the region lands after crop, resize and flip (at
        least the pixel it falls on)."""
        (t, left), (b, right) = to_output(self.top, self.left, g), to_output(self.bottom, self.right, g)
        cy, cx = (t + b) / 2, (left + right) / 2
        hy, hx = max(abs(b - t) / 2, 0.5), max(abs(right - left) / 2, 0.5)
        yy, xx = np.mgrid[: g.output_shape[0], : g.output_shape[1]]
        if self.ellipse:
            return ((yy - cy) / hy) ** 2 + ((xx - cx) / hx) ** 2 <= 1.0
        return (np.abs(yy - cy) <= hy) & (np.abs(xx - cx) <= hx)


def _region(values: dict[str, str], header: list[str]) -> Region | None:
    """The row's circle (x, y, radius) or box (x0, y0, x1, y1); None where neither is given in numbers."""
    if all(c in header for c in CIRCLE):
        x, y, r = (parse_number(values[c]) for c in CIRCLE)
        if x is not None and y is not None and r is not None and r > 0:
            return Region(y - r, x - r, y + r, x + r, ellipse=True)
    if all(c in header for c in BOX):
        x0, y0, x1, y1 = (parse_number(values[c]) for c in BOX)
        if x0 is not None and y0 is not None and x1 is not None and y1 is not None and x1 > x0 and y1 > y0:
            return Region(y0, x0, y1, x1, ellipse=False)
    return None


def read_regions(path: Path, problems: Problems) -> dict[RegionKey, list[Region]]:
    """Marked regions per (patient, side, view), several to an image allowed. A row that names no breast
    or no region is recorded with its line and left out."""
    header, rows = read_rows(path, KEY_COLUMNS, problems, "regions file")
    if not any(all(c in header for c in shape) for shape in (CIRCLE, BOX)):
        raise DataError(
            f"{path}: no region columns: expected x, y, radius (a circle) or x0, y0, x1, y1 (a box), in the "
            f"original image's pixels (found columns: {', '.join(header)})"
        )
    regions: dict[RegionKey, list[Region]] = defaultdict(list)
    for row in rows:
        v, where = row.values, f"{path.name} line {row.line}"
        side, view = parse_side(v["side"]), parse_view(v["view"])
        region = _region(v, header)
        if not v["patient_id"] or side is None or view is None:
            problems.add(
                "invalid row",
                f"{where}: no breast named (patient_id, side L/R and view CC/MLO are needed; found side "
                f"{v['side']!r}, view {v['view']!r})",
                path=str(path),
            )
        elif region is None:
            problems.add(
                "invalid row",
                f"{where}: no region (numbers in x, y and a positive radius, or x0 < x1 and y0 < y1)",
                path=str(path),
            )
        else:
            regions[(v["patient_id"], side, view)].append(region)
    return dict(regions)


def regions_of(marked: dict[RegionKey, list[Region]], patient: str, side: str) -> dict[View, list[Region]]:
    """The regions marked on each view of one breast (none where nothing is marked)."""
    return {v: marked.get((str(patient), Side(side), v), []) for v in VIEWS}


REDRAWN = 0x5A11E4C7  # what sets the re-drawn network's weights apart from training's (`redrawn`)


def redrawn(cfg: ModelConfig, n_clinical: int, seed: int, draw: int = 0) -> TwoViewNet:
    """The same architecture with its weights drawn afresh (no pretrained start), in eval mode: drawn from
    a stream of its own, seeded by `seed`, REDRAWN and the `draw` (another draw, other weights). Drawn with
    the training's seed itself, it would be the model's own initialisation (training draws it first), which a
    model trained from random weights stays close to: the check would compare the model with where it
    started, not with weights that know nothing."""
    with torch.random.fork_rng():
        torch.manual_seed(int(np.random.SeedSequence([seed, REDRAWN, draw]).generate_state(1)[0]))
        return create_model(cfg.model_copy(update={"pretrained": "none"}), n_clinical).eval()


NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)  # a normalisation layer is part of the block before it


@dataclass(frozen=True)
class Stage:
    """One step of the cascading randomisation: the weights `keys` (of the network's state) are replaced by
    the re-drawn network's, with those of every stage before it."""

    name: str  # "head", "block 4 of 4" (counted from the input)
    column: str  # its column in cascade.csv: the rank correlation of its maps with the model's
    keys: frozenset[str]


def _blocks(body: nn.Module) -> list[list[str]]:
    """A backbone body's blocks from the input up, each the module paths it is made of: the children with
    weights of the first module that has more than one (resnet's stem conv and norm, layer1..layer4;
    densenet's dense blocks and transitions inside `features`), a normalisation layer joined to the block
    before it."""
    prefix, module = "", body
    while True:
        children = [(n, m) for n, m in module.named_children() if any(True for _ in m.parameters())]
        if len(children) != 1:
            break
        name, module = children[0]
        prefix += f"{name}."
    if not children:  # one layer with weights: a single block
        return [[prefix.rstrip(".")]] if prefix else []
    blocks: list[list[str]] = []
    for name, child in children:
        if blocks and isinstance(child, NORMS):
            blocks[-1].append(prefix + name)
        else:
            blocks.append([prefix + name])
    return blocks


def cascade_stages(net: TwoViewNet) -> list[Stage]:
    """The cascading randomisation's stages from the top down: the head (everything after the backbones'
    feature maps: the fusion, the clinical branch, a patch model's attention), then each block of both views'
    backbones from the last to the first. Together they cover every weight: the last stage is the re-drawn
    network."""
    keys = set(net.state_dict())
    blocks = _blocks(net.backbone(View.CC).body)
    in_block = []
    for block in blocks:
        prefixes = tuple(f"backbones.{v.value}.body.{path}." for v in VIEWS for path in block)
        in_block.append(frozenset(k for k in keys if k.startswith(prefixes)))
    head = frozenset(keys.difference(*in_block))
    columns = ["cascade_head", *(f"cascade_block{i + 1}" for i in reversed(range(len(blocks))))]
    parts = [head, *reversed(in_block)]
    return [Stage(stage_name(c, len(blocks)), c, k) for c, k in zip(columns, parts, strict=True)]


def stage_name(column: str, blocks: int) -> str:
    """A stage's name from its column in cascade.csv: "head", or "block K of `blocks`" (from the input)."""
    return "head" if column == "cascade_head" else f"block {column.removeprefix('cascade_block')} of {blocks}"


def cascade(net: TwoViewNet, fresh: TwoViewNet) -> Iterator[tuple[Stage, TwoViewNet]]:
    """The model with its learnt weights replaced by `fresh`'s, stage by stage from the top down: one copy,
    changed in place between the stages (a stage's network is valid until the next is drawn)."""
    model, drawn = copy.deepcopy(net).eval(), fresh.state_dict()
    for stage in cascade_stages(net):
        model.load_state_dict({k: drawn[k] for k in stage.keys}, strict=False)
        yield stage, model


def rank_correlation(a: np.ndarray, b: np.ndarray, within: np.ndarray) -> float:
    """Spearman's rho of two maps over the pixels `within`; NaN where either map is flat there."""
    x, y = a[within], b[within]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y)[0])


def localise(cam: np.ndarray, breast: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Pointing game and mass share of one map: hit (the peak in the region), energy_share (the map's mass
    in it) and area_share (the region's share of the breast: the chance level of both). A blank map has
    neither peak nor mass: NaN."""
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    total = float(cam.sum())
    return {
        "hit": float(region[peak]) if total > 0 else float("nan"),
        "energy_share": float(cam[region].sum()) / total if total > 0 else float("nan"),
        "area_share": float((region & breast).sum()) / max(int(breast.sum()), 1),
    }


def region_mask(regions: list[Region], g: Geometry) -> np.ndarray | None:
    """Where an image's marked regions land in the model's input (their union); None for no region."""
    return np.logical_or.reduce([r.mask(g) for r in regions]) if regions else None


def score_map(
    cam: np.ndarray, fresh: np.ndarray, image: np.ndarray, region: np.ndarray | None, view: View
) -> tuple[dict[str, float], bool]:
    """Both checks of one view's map `cam` beside the re-drawn network's `fresh`: (blank, redrawn_rho
    and, where a region is marked, the localisation of both maps and of the brightest-spot rule; whether
    the region lies off the breast the model was given, cut away by the crop: then there is nothing to
    score it on). `view`: an MLO's brightest spot is looked for outside its pectoral muscle."""
    breast = breast_mask(image)
    record = {
        "blank": int(not (cam[breast] > 0).any()),
        "redrawn_rho": rank_correlation(cam, fresh, breast),
    }
    if region is None or not (region & breast).any():
        return record, region is not None
    found = localise(fresh, breast, region)
    scores = localise(cam, breast, region)
    return record | scores | {
        "redrawn_hit": found["hit"],
        "redrawn_energy_share": found["energy_share"],
        "brightest_hit": localise(brightest(image, tissue(image, breast, view)), breast, region)["hit"],
    }, False


def tissue(image: np.ndarray, breast: np.ndarray, view: View) -> np.ndarray:
    """The breast's tissue: on an MLO, the breast without the pectoral muscle where one is found."""
    muscle = pectoral_muscle(image, breast) if view is View.MLO else None
    return breast if muscle is None else breast & ~muscle


BRIGHTEST_SIGMA = 0.02  # the smoothing of `brightest`, as a share of the image's longer side


def brightest(image: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """The map of a rule that knows no model: the image's mean over the `tissue` mask's pixels around each of
    them (a Gaussian of BRIGHTEST_SIGMA of its longer side, so that a dense region, not one bright pixel,
    stands out, and what lies outside the mask, such as a bright muscle beside it, counts for nothing), on
    the mask only. Its peak is the densest spot of the tissue: a pointing game a model's maps should beat
    to show they find more than the densest tissue."""
    sigma = BRIGHTEST_SIGMA * max(image.shape)
    weight = tissue.astype(np.float32)
    total = cv2.GaussianBlur(image.astype(np.float32) * weight, (0, 0), sigma)
    return np.where(tissue, total / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-6), 0.0)


def localise_tiles(
    attention: np.ndarray, region: np.ndarray, tile: int, area: np.ndarray | None = None
) -> dict[str, float]:
    """The patch model's tile attention against a region: attention_hit (a tile of the highest weight
    touches the region), attention_share (the weight of the tiles touching it; the weights sum to 1 over
    the tiles with breast) and tile_share, the chance level: the share the touching tiles would hold if
    the attention had no preference among the tiles. That is their share of the tiles with breast, or,
    for attention over the breast's area (model.attention_by_area; `area`: each tile's breast share,
    rows x columns, `tile_area`), their share of the breast's area."""
    weights = attention[::tile, ::tile]  # each pixel holds its tile's weight: one value per tile
    h, w = region.shape
    grid = np.pad(region, ((0, -h % tile), (0, -w % tile)))
    touched = grid.reshape(grid.shape[0] // tile, tile, grid.shape[1] // tile, tile).any(axis=(1, 3))
    even = (weights > 0).astype(float) if area is None else area  # a tile without breast is never weighed
    return {
        "attention_hit": float((touched & (weights == weights.max())).any()),
        "attention_share": float(weights[touched].sum() / weights.sum()),
        "tile_share": float(even[touched].sum() / max(even.sum(), 1e-12)),
    }


def tile_area(image: np.ndarray, tile: int) -> np.ndarray:
    """The breast share of each tile of a preprocessed image (H, W) as the patch model cuts it: (rows,
    columns)."""
    tiles, grid = cut_tiles(torch.from_numpy(image)[None, None], tile)
    return breast_share(tiles)[0].view(grid).numpy()


def _mean_ci(values: np.ndarray, weights: np.ndarray) -> list[float] | None:
    """[mean, low, high]: the 95 % percentile interval over the bootstrap's rows of breast weights (a
    resample that drew none of these maps' patients says nothing of them and is passed over); None where
    no value is known (every map blank)."""
    known = ~np.isnan(values)
    v, w = values[known], weights[:, known]
    w = w[w.sum(axis=1) > 0]
    if not len(v):
        return None
    boot = (w @ v) / w.sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan)
    return [float(v.mean()), float(low), float(high)]


LOCALISATION = ("hit", "area_share", "energy_share", "redrawn_hit", "redrawn_energy_share", "brightest_hit")
ATTENTION = ("attention_hit", "tile_share", "attention_share")  # the patch model's


PAIRED = {  # checks.csv's column -> compare.csv's
    "hit": "tumour_peak",
    "energy_share": "tumour_mass",
    "attention_hit": "attention_peak",  # a patch model's tile attention: where every setup has it
    "attention_share": "attention_mass",
}


def paired_localisation(tables: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Per setup (`tables`: each one's checks, the first the reference), on the positive breasts' maps
    that every setup scored (a region marked, the map not blank): the share whose peak lies on the tumour
    (tumour_peak) and the map's mass there (tumour_mass), and where every setup is a patch model the same
    for its tile attention (attention_peak, attention_mass); each a mean with its 95 % interval, and
    against the first setup the paired difference (the same maps, the same patient resamples: *_diff);
    each also per view (`*_cc`, `*_diff_mlo`, ..., with intervals: a model may look at the tumour in one
    view only)."""
    parts = {}
    for name, table in tables.items():
        key = [c for c in ("patient", "side", "view", "fold") if c in table]
        scored = table["hit"].notna() if "hit" in table else pd.Series(False, index=table.index)
        parts[name] = table[(table["label"] == 1) & scored].set_index(key)
    reference = next(iter(parts))
    common = parts[reference].index
    for part in parts.values():
        common = common.intersection(part.index)
    if not len(common):
        return pd.DataFrame({"preset": list(tables), "tumour_maps": 0})
    patients = common.get_level_values("patient").to_numpy()
    views = common.get_level_values("view").to_numpy()
    w = patient_weights(np.ones(len(common)), patients, N_BOOTSTRAP, np.random.default_rng(seed))
    measured = [c for c in PAIRED if all(c in p and p.loc[common, c].notna().all() for p in parts.values())]
    first = parts[reference].loc[common]
    rows = []
    for name, part in parts.items():
        part, row = part.loc[common], {"preset": name, "tumour_maps": len(common)}
        for column in measured:
            out, values = PAIRED[column], part[column].to_numpy(dtype=float)
            against = {out: values}
            if name != reference:
                against[f"{out}_diff"] = values - first[column].to_numpy(dtype=float)
            for stem, v in against.items():
                row |= dict(zip((stem, f"{stem}_low", f"{stem}_high"), _mean_ci(v, w) or []))
                for view in VIEWS:
                    of_view, tag = views == view.value, f"{stem}_{view.value.lower()}"
                    ci = _mean_ci(v[of_view], w[:, of_view]) or [np.nan] * 3
                    row |= dict(zip((tag, f"{tag}_low", f"{tag}_high"), ci))
        rows.append(row)
    return pd.DataFrame(rows)


def _breasts(table: pd.DataFrame) -> int:
    """How many breasts the maps are of (a breast's row number differs between the folds of a share)."""
    return len(table.drop_duplicates(["patient", "side"]))


def summarise(
    table: pd.DataFrame,
    positive: str,
    regions: str | None,
    seed: int = 0,
    cascade: pd.DataFrame | None = None,
) -> dict:
    """checks.json: the randomisation check's median and quartiles, the `cascade`'s stages (`_cascade`), and,
    with regions, the localisation means with intervals for all marked held-out breasts and for the positive
    ones."""
    summary: dict = {
        "breasts": _breasts(table),
        "maps": len(table),
        "blank": int(table["blank"].sum()),  # no pixel of the breast raises the positive score
        "randomisation": _spread(table["redrawn_rho"]) | {"cascade": _cascade(cascade)},
        "localisation": None,
    }
    if regions is None:
        return summary
    marked = table[table["area_share"].notna()] if "area_share" in table else table.iloc[:0]
    groups = []
    for name, group in (("marked", marked), (positive, marked[marked["label"] == 1])):
        part = group[group["blank"] == 0]  # a blank map points nowhere: counted apart
        if not len(part):
            continue
        w = patient_weights(
            part["label"].to_numpy(), part["patient"].to_numpy(), N_BOOTSTRAP, np.random.default_rng(seed)
        )
        columns = [c for c in LOCALISATION + ATTENTION if c in part]
        means = {c: _mean_ci(part[c].to_numpy(dtype=float), w) for c in columns}
        by_view = {view: maps[columns].mean().to_dict() for view, maps in part.groupby("view")}
        counts = {"breasts": _breasts(part), "maps": len(part), "blank": len(group) - len(part)}
        paired = _over_brightest(part, w) if "brightest_hit" in part else {}
        groups.append({"name": name} | counts | means | paired | {"by_view": by_view})
    unmarked = int(len(table) - len(marked))
    summary["localisation"] = {"regions": regions, "unmarked_maps": unmarked, "groups": groups}
    return summary


def _spread(rho: pd.Series) -> dict:
    """How many rank correlations are known, their median and quartiles, and those of their absolute values
    (`abs_median`, `abs_quartiles`): Grad-CAM keeps what raises the score, so new weights that turn the
    score's direction around give the map's negative, the same picture the other way round (rho near -1)."""
    rho = rho.dropna()
    if not len(rho):
        return {"maps": 0, "median": None, "quartiles": [], "abs_median": None, "abs_quartiles": []}
    quartiles = [float(q) for q in rho.quantile([0.25, 0.75])]
    absolute = [float(q) for q in rho.abs().quantile([0.25, 0.75])]
    return {
        "maps": len(rho),
        "median": float(rho.median()),
        "quartiles": quartiles,
        "abs_median": float(rho.abs().median()),
        "abs_quartiles": absolute,
    }


def _cascade(cascade: pd.DataFrame | None) -> dict | None:
    """The cascading randomisation (`explain.cascade_table`): how many breasts and draws of the random weights
    went through it, and its stages from the top down, each named (`Stage.name`) with `_spread` of its maps'
    rank correlations with the model's over every draw, and per view with each draw's median |rho| apart
    (`draws`: how far one draw's verdict could be luck); None where it was not run."""
    if cascade is None or not len(cascade):
        return None
    columns = [c for c in cascade if c.startswith("cascade_")]  # in the order of the stages
    blocks = sum(c.startswith("cascade_block") for c in columns)
    stages = []
    for c in columns:
        by_view = {
            view: _spread(maps[c])
            | {"draws": [float(d.abs().median()) for _, d in maps.groupby("draw")[c] if d.notna().any()]}
            for view, maps in cascade.groupby("view")
        }
        stages.append({"stage": stage_name(c, blocks)} | _spread(cascade[c]) | {"by_view": by_view})
    return {"breasts": _breasts(cascade), "draws": int(cascade["draw"].nunique()), "stages": stages}


def _over_brightest(part: pd.DataFrame, w: np.ndarray) -> dict:
    """How much more often the maps' peaks lie on the tumour than the brightest-spot rule's, paired (the same
    maps, the same patient resamples `w`): over both views, and per view, where the rule differs most."""
    difference = (part["hit"] - part["brightest_hit"]).to_numpy(float)
    views = part["view"].to_numpy()
    return {
        "hit_over_brightest": _mean_ci(difference, w),
        "hit_over_brightest_by_view": {
            view: _mean_ci(difference[views == view], w[:, views == view]) for view in sorted(set(views))
        },
    }


def _cascade_view(stages: list[tuple[str, dict]]) -> str:
    """One view's cascade: each stage's median |rho| over every draw (the range of the draws' medians in
    brackets), and the stage from which the maps no longer show the model's picture, either way round."""
    stages = [(name, spread) for name, spread in stages if spread["abs_median"] is not None]
    if not stages:
        return (
            "no stage compared: each of the model's maps is blank or flat over the breast (nothing to rank)"
        )
    medians = ", ".join(
        f"{name} {s['abs_median']:.2f} ({min(s['draws']):.2f}-{max(s['draws']):.2f})" for name, s in stages
    )
    changed = next((i for i, (_, s) in enumerate(stages) if s["abs_median"] < INSENSITIVE), None)
    if changed is None:
        verdict = "the maps keep their picture whatever is redrawn: they show the image, not the model"
    elif changed == 0:
        verdict = "the maps change as soon as the head is redrawn: they follow how the model weighs features"
    else:
        above = "the head" if changed == 1 else f"the head and the blocks to {stages[changed - 1][0]}"
        verdict = (
            f"with {above} redrawn the maps keep their picture (either way round): they show where the "
            f"layers below respond more than how {above} weighs that; they change once {stages[changed][0]} "
            "is redrawn"
        )
    deciding = stages if changed is None else stages[: changed + 1]  # those the verdict rests on
    if split := [name for name, s in deciding if min(s["draws"]) < INSENSITIVE <= max(s["draws"])]:
        verdict += f" (one draw of the random weights alone could have said either at {', '.join(split)})"
    return f"{medians}: {verdict}"


def _cascade_line(cascade: dict) -> str:
    """The cascading randomisation in a sentence, each view apart."""
    views = sorted(cascade["stages"][0]["by_view"])
    parts = [
        f"{v}: " + _cascade_view([(s["stage"], s["by_view"][v]) for s in cascade["stages"]]) for v in views
    ]
    return (
        f"cascading randomisation (on the maps of {cascade['breasts']} held-out breasts drawn at random, the "
        f"learnt weights replaced by random ones from the top down to the whole network, {cascade['draws']} "
        "draws of them; the median |Spearman| with the model's maps after each stage, the range of the "
        "draws' medians in brackets): " + "; ".join(parts)
    )


def _views(group: dict, column: str) -> str:
    """The mean of each view apart: a model may look at the tumour in one view and elsewhere in the other."""
    return ", ".join(f"{view} {100 * means[column]:.0f} %" for view, means in group["by_view"].items())


def _percent(triple: list[float] | None) -> str:
    if triple is None:
        return "none (every map blank)"
    mean, low, high = (100 * t for t in triple)
    return f"{mean:.0f} % [{low:.0f}, {high:.0f}]"


def _points(triple: list[float] | None) -> str:
    """A paired difference of two shares, in percentage points with its interval."""
    if triple is None:
        return "none (every map blank)"
    mean, low, high = (100 * t for t in triple)
    return f"{mean:+.0f} points [{low:+.0f}, {high:+.0f}]"


def _against_the_rule(triple: list[float] | None) -> str:
    """What the paired difference between the maps' and the brightest-spot rule's hits says."""
    if triple is None:
        return ""
    _, low, high = triple
    if low > 0:
        return ": the maps find the tumour more often than the breast's densest spot does"
    if high < 0:
        return ": the maps find the tumour less often than the breast's densest spot does"
    return (
        ": the maps find the tumour no more often than the breast's densest spot does (the interval holds "
        "0): they may show where the breast is dense rather than what the model learnt of the tumour"
    )


def summary_lines(summary: dict) -> list[str]:
    """What the checks say, in sentences (the terminal and the report)."""
    r = summary["randomisation"]
    lines = []
    if summary["blank"]:
        lines.append(
            f"{summary['blank']} of the {summary['maps']} held-out maps are blank: no pixel of the breast "
            "raises the score there (Grad-CAM keeps only what does); they are left out of the checks below"
        )
    if r["maps"]:
        q1, q3 = r["quartiles"]
        alike = r.get("abs_median", r["median"])  # checks written before 2026-11-28 have the signed one only
        verdict = (
            "the maps change little without the learnt weights: they show the image's structure more than "
            "what the model learnt; read them with care"
            if alike >= INSENSITIVE
            else "the maps depend on what the model learnt"
        )
        absolute = (
            f"; |Spearman| median {alike:.2f}, a map's negative counting as alike"
            if "abs_median" in r
            else ""
        )
        lines.append(
            f"randomisation check (Adebayo et al. 2018): the maps of the same network with its weights drawn "
            f"afresh rank the breast's pixels alike at median Spearman {r['median']:.2f} (quartiles "
            f"{q1:.2f}, {q3:.2f}{absolute}; {r['maps']} maps of {summary['breasts']} held-out breasts): "
            f"{verdict}"
        )
    if r.get("cascade"):  # checks written before it was measured have none
        lines.append(_cascade_line(r["cascade"]))
    loc = summary["localisation"]
    unmatched = loc.get("unmatched_images", 0) if loc is not None else 0
    if unmatched and unmatched == loc["marked_images"]:
        lines.append(
            f"warning: none of the {unmatched} images marked in {loc['regions']} names a breast of this run: "
            "are their patient IDs and sides written as in the labels CSV (leading zeros, another ID)?"
        )
    elif unmatched:
        lines.append(
            f"localisation: {unmatched} of the {loc['marked_images']} images marked in {loc['regions']} name "
            "breasts this run does not have (left out at ingest, or not of this cohort)"
        )
    if loc is not None and not loc["groups"]:
        lines.append(f"localisation: no held-out breast has a region marked in {loc['regions']}")
    elif loc is not None and loc["unmarked_maps"]:
        lines.append(
            f"localisation: {loc['unmarked_maps']} held-out maps have no region marked in {loc['regions']}"
        )
    for g in loc["groups"] if loc else []:
        hit, chance, fresh = (_percent(g[k]) for k in ("hit", "area_share", "redrawn_hit"))
        mass, fresh_mass = _percent(g["energy_share"]), _percent(g["redrawn_energy_share"])
        bright = (  # checks written before it was measured have no such column
            f"; the breast's brightest spot, smoothed, with no model at all (on an MLO, outside the pectoral "
            f"muscle): {_percent(g['brightest_hit'])} ({_views(g, 'brightest_hit')}), the maps against it, "
            f"paired: {_points(g['hit_over_brightest'])} ("
            + ", ".join(f"{v} {_points(d)}" for v, d in g["hit_over_brightest_by_view"].items())
            + ")"
            if "brightest_hit" in g
            else ""
        )
        lines.append(
            f"localisation on the {g['name']} held-out breasts ({g['breasts']}, {g['maps']} maps; regions "
            f"from {loc['regions']}): the map's peak lies in the marked region in {hit} of maps "
            f"({_views(g, 'hit')}; chance, a point anywhere on the breast: {chance}; the network with its "
            f"weights drawn afresh: {fresh}{bright}); {mass} of the map's mass lies there (the region's "
            f"share of the breast's area: {chance}; re-drawn: {fresh_mass})"
            + _against_the_rule(g.get("hit_over_brightest"))
        )
        if "attention_hit" in g:
            top, tiles, weight = (_percent(g[k]) for k in ATTENTION)
            lines.append(
                f"the patch model's tile attention on the {g['name']} held-out breasts: a tile of the "
                f"highest weight touches the marked region in {top} of maps ({_views(g, 'attention_hit')}), "
                f"and the tiles touching it hold {weight} of the attention (chance for both, the attention "
                f"with no preference among the tiles: {tiles})"
            )
    return lines
