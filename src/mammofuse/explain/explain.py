"""`mammofuse explain RUN_DIR`: Grad-CAM overlays for the test breasts that matter most, and whether the
maps can be trusted.

Highest and lowest scores, and the largest errors at the validation-chosen threshold (false
positives with the highest scores, false negatives with the lowest). Cases are named by their row
number in the run's data.csv (or the output row of `predict`), never by patient. Then the checks of
`explain.checks` over every test breast (of a cross-validation: over every breast, out of fold).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammofuse.config import Config, ModelConfig
from mammofuse.domain import VIEWS, View
from mammofuse.evaluation.plots import cascade_figure
from mammofuse.explain import CASCADE_BREASTS, CASCADE_DRAWS
from mammofuse.explain.checks import (
    INSENSITIVE,
    Region,
    RegionKey,
    cascade,
    cascade_stages,
    localise_tiles,
    rank_correlation,
    read_regions,
    redrawn,
    region_mask,
    regions_of,
    score_map,
    summarise,
    tile_area,
)
from mammofuse.explain.gradcam import attention_maps, gradcam
from mammofuse.explain.overlays import case_figure
from mammofuse.imaging.cache import entry_record, load_entry, read_display
from mammofuse.imaging.geometry import Geometry, as_is, breast_mask, display_shape, map_to_original, resize
from mammofuse.imaging.preprocess import display_file
from mammofuse.models import TwoViewNet
from mammofuse.parallel import Progress, parallel_map
from mammofuse.problems import DataError, Problem, Problems
from mammofuse.runs import Run
from mammofuse.storage import replace_text, write_table
from mammofuse.ui import console, progress


@dataclass
class CaseInput:
    """What the model was given for one breast, and where it came from. Its preprocessed images stay in
    the cache until they are needed (`read_images`): a large export's never sit in memory all at once."""

    cached: dict[View, str]  # the preprocessed images' cache entries
    clinical: list[np.ndarray]  # encoded (F,), one per network explained (each has its own encoder)
    paths: dict[View, str]  # the original DICOM files
    geometry: dict[View, Geometry]  # how each preprocessed image maps back onto its original

    @classmethod
    def of(cls, cached: dict[View, str], clinical: list[np.ndarray], paths: dict[View, str]) -> CaseInput:
        geometry = {v: Geometry.from_dict(entry_record(cached[v])["geometry"]) for v in VIEWS}
        return cls(cached, clinical, paths, geometry)

    def read_images(self) -> dict[View, np.ndarray]:
        """The preprocessed images, float32 (H, W), read from the cache."""
        return {v: load_entry(self.cached[v]) for v in VIEWS}


def select_cases(pred: pd.DataFrame, threshold: float, n: int) -> list[tuple[str, int]]:
    """(category, index into pred) for the breasts worth looking at, each at most once per category."""
    by_score = pred.sort_values("probability", kind="stable")
    fp = by_score[(by_score["label"] == 0) & (by_score["probability"] >= threshold)]
    fn = by_score[(by_score["label"] == 1) & (by_score["probability"] < threshold)]
    groups = {
        "highest": by_score.index[::-1][:n],
        "lowest": by_score.index[:n],
        "false-positive": fp.index[::-1][:n],
        "false-negative": fn.index[:n],
    }
    return [(name, int(i)) for name, idx in groups.items() for i in idx]


def case_from_row(row: pd.Series, clinical: list[np.ndarray]) -> CaseInput:
    """A breast of a run's data.csv, its images read back from the cache."""
    cached = {v: str(row[v.column("cache")]) for v in VIEWS}
    return CaseInput.of(cached, clinical, {v: str(row[v.column("path")]) for v in VIEWS})


def original_image(case: CaseInput, view: View, voi: bool) -> np.ndarray:
    """The whole original image as the figures show it (`preprocess.display_image`: at most
    DISPLAY_MAX_SIDE pixels a side, black outside the breast, so that no burned-in text reaches a figure
    or the report): the cache's display copy, or, for an entry made without one, decoded again."""
    shown = read_display(case.cached[view])
    if shown is None:
        shown = display_file(case.paths[view], voi)
    return shown.astype(np.float32) / 255


Maps = dict[View, np.ndarray]


def explain_breast(nets: list[TwoViewNet], pre: Maps, clinical: list[np.ndarray]) -> tuple[Maps, Maps | None]:
    """Grad-CAM maps of one breast at the preprocessed resolution and, for a patch model, its tile
    attention, each averaged over the networks (the members of a fold ensemble; one for a single run)."""
    x = {v: torch.from_numpy(pre[v])[None, None] for v in VIEWS}  # (1, 1, H, W)
    inputs = [(net, x[View.CC], x[View.MLO], torch.from_numpy(c)[None]) for net, c in zip(nets, clinical)]
    cams = [gradcam(*args) for args in inputs]
    attention = [attention_maps(*args) for args in inputs]
    mean = {v: np.mean([m[v][0] for m in cams], axis=0) for v in VIEWS}
    if any(a is None for a in attention):
        return mean, None
    return mean, {v: np.mean([a[v][0] for a in attention if a is not None], axis=0) for v in VIEWS}


def on_originals(case: CaseInput, cams: Maps, voi: bool) -> tuple[Maps, Maps]:
    """The original images as the figures show them (`original_image`) and the maps carried back onto
    them, both at the figures' size (`display_shape` of the original)."""
    original = {v: original_image(case, v, voi) for v in VIEWS}
    g = case.geometry
    return original, {
        v: resize(map_to_original(cams[v], g[v]), display_shape(g[v].original_shape)) for v in VIEWS
    }


def _outline(regions: list[Region], g: Geometry) -> np.ndarray:
    """Where `regions` lie on an image of geometry `g` (nowhere for none)."""
    mask = region_mask(regions, g)
    return mask if mask is not None else np.zeros(g.output_shape, bool)


@dataclass(frozen=True)
class CaseFigure:
    """One breast's figure, its maps computed: what `draw_case` needs (in a worker process, where many are
    drawn). `images`: the preprocessed images, as read for the maps; `tile`: a patch model's tile size (0 for
    a whole-image model); `regions`: the tumours marked on the images, outlined."""

    case: CaseInput
    images: Maps
    cams: Maps
    attention: Maps | None
    tile: int
    voi: bool
    title: str
    path: Path
    regions: dict[View, list[Region]] | None = None


def draw_case(figure: CaseFigure) -> None:
    """The case figure: CC and MLO, the map on the model's input (top) and on the original (bottom); the
    marked tumours outlined on the maps. Saved to `figure.path`."""
    case, regions = figure.case, figure.regions
    original, back = on_originals(case, figure.cams, figure.voi)
    marked = None
    if regions and any(regions.values()):  # over the model's input, and over the original
        pre = {v: _outline(regions[v], case.geometry[v]) for v in VIEWS}
        marked = (pre, {v: _outline(regions[v], as_is(case.geometry[v].original_shape)) for v in VIEWS})
    drawn = case_figure(
        figure.images, figure.cams, original, back, figure.title, figure.attention, figure.tile, marked
    )
    drawn.savefig(figure.path, dpi=100)


def tile_size(nets: list[TwoViewNet]) -> int:
    """A patch model's tile size, 0 for a whole-image model."""
    tiles = nets[0].attention(View.CC)
    return tiles.tile if tiles is not None else 0


def write_case(
    nets: list[TwoViewNet],
    case: CaseInput,
    voi: bool,
    title: str,
    path: Path,
    regions: dict[View, list[Region]] | None = None,
) -> tuple[Maps, Maps | None]:
    """The case figure of one breast (`draw_case`). Returns the maps drawn (Grad-CAM and a patch model's
    attention, at the model input's resolution)."""
    images = case.read_images()
    cams, attention = explain_breast(nets, images, case.clinical)
    draw_case(CaseFigure(case, images, cams, attention, tile_size(nets), voi, title, path, regions))
    return cams, attention


DRAWN_AT_ONCE = 32  # breasts whose maps wait for their figures at most: memory stays flat however many


def explain_cases(
    nets: list[TwoViewNet],
    cases: dict[int, CaseInput],
    voi: bool,
    out_dir: Path,
    regions: dict[int, dict[View, list[Region]]] | None = None,
    workers: int = 0,
    progress: Callable[[str], Progress] | None = None,
    check: Callable[[int, CaseInput, Maps, tuple[Maps, Maps | None]], None] | None = None,
    titles: dict[int, str] | None = None,
) -> int:
    """Overlays for breasts scored by `predict`, named by their output row (row{N}.png, never by
    patient); the tumours marked on a row's images (`regions`) outlined. DRAWN_AT_ONCE breasts at a time:
    their maps computed here, one breast after another, and seen by `check(row, case, images, maps)`; then
    their figures drawn by `workers` processes (0: every core; drawing takes most of the time, the
    originals read from the cache's display copies), one after the other so that neither slows the other.
    Nothing of a breast is kept once drawn, and its preprocessed images are read from the cache once.
    `titles`: each row's figure title ("row N" where none). Returns the number of overlays written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tile, items = tile_size(nets), list(cases.items())

    def figure(row: int, case: CaseInput) -> CaseFigure:
        images = case.read_images()
        maps = explain_breast(nets, images, case.clinical)
        if check is not None:
            check(row, case, images, maps)
        path, marked = out_dir / f"row{row}.png", (regions or {}).get(row)
        title = (titles or {}).get(row, f"row {row}")
        return CaseFigure(case, images, *maps, tile, voi, title, path, marked)

    def drawn() -> Iterator[None]:  # one step of DRAWN_AT_ONCE breasts after the other
        for start in range(0, len(items), DRAWN_AT_ONCE):
            step = [figure(row, case) for row, case in items[start : start + DRAWN_AT_ONCE]]
            yield from parallel_map(draw_case, step, workers, chunksize=1)

    for _ in progress("Grad-CAM overlays")(drawn(), len(items)) if progress else drawn():
        pass
    return len(items)


def test_predictions(run: Run, data: pd.DataFrame) -> tuple[pd.DataFrame, list[int]]:
    """The run's test predictions (indexed from 0) and each breast's row in its data.csv (0-based)."""
    pred = run.read_predictions()
    pred = pred[pred["split"] == "test"].reset_index(drop=True)
    row_of = {key: i for i, key in enumerate(data["patient_id"] + "/" + data["side"])}
    return pred, [row_of[key] for key in pred["key"]]


INDEX_COLUMNS = ["file", "category", "row", "label", "probability"]


def explain_run(
    run_dir: Path,
    n: int = 3,
    marked: dict[RegionKey, list[Region]] | None = None,
    problems: Problems | None = None,
) -> pd.DataFrame:
    """Write the run's explain/*.png (the `marked` tumours outlined) and explain/index.csv; return the
    index. Each overlay shows the original image too, from the cache's display copy; a case whose cache
    has none it can read and whose DICOM files are no longer where ingest found them is not drawn, and
    recorded in `problems`."""
    run = Run(run_dir)
    threshold = run.read_evaluation().model.threshold
    cfg, data, encoder, net = run.read_config(), run.cached_data(), run.read_encoder(), run.read_net()
    pred, rows = test_predictions(run, data)
    voi = cfg.preprocess.voi == "window"

    run.explain.mkdir(exist_ok=True)
    run.explain_index.unlink(missing_ok=True)  # stopped before the new one is written: no index of gone cases
    for old in run.explain.glob("*.png"):  # an earlier explain's cases: index.csv names this one's alone
        if old != run.explain_cascade:
            old.unlink()
    records = []
    for rank, (category, i) in enumerate(select_cases(pred, threshold, n)):
        p, r = pred.loc[i], rows[i]
        case = case_from_row(data.loc[r], [encoder.transform(data.loc[[r]])[0]])
        name = f"{category}-{rank:02d}-row{r + 1}.png"
        title = f"{category}: row {r + 1}, label {int(p['label'])}, probability {p['probability']:.2f}"
        regions = regions_of(marked or {}, data.loc[r, "patient_id"], data.loc[r, "side"])
        missing = [v for v in VIEWS if read_display(case.cached[v]) is None]  # none or damaged: decode
        if gone := [f"{v.value} {case.paths[v]}" for v in missing if not Path(case.paths[v]).is_file()]:
            if problems is not None:
                problems.add(
                    "original image not found",
                    f"row {r + 1} ({category}): {'; '.join(gone)}: not found (moved since ingest?); the "
                    "overlay shows the map on the original image too, and the cache keeps no copy of it "
                    "(made before copies were kept), so it is not drawn",
                    path=case.paths[View.CC],
                )
            continue
        write_case([net], case, voi, title, run.explain / name, regions)
        records.append([name, category, r + 1, int(p["label"]), float(p["probability"])])
    index = pd.DataFrame(records, columns=INDEX_COLUMNS)
    write_table(index, run.explain_index)
    return index


def score_case(
    case: CaseInput,
    images: Maps,
    maps: Maps,
    fresh: Maps,
    attention: Maps | None,
    regions: dict[View, list[Region]],
    model: ModelConfig,
    problems: Problems,
    where: str,
) -> list[dict]:
    """Each view's checks of one breast (`score_map`, and `localise_tiles` for a patch model's `attention`),
    from its preprocessed images and maps (H, W) per view; a region that the crop cut away is recorded in
    `problems`."""
    records = []
    for view in VIEWS:
        region = region_mask(regions[view], case.geometry[view])
        scores, off = score_map(maps[view], fresh[view], images[view], region, view)
        if attention is not None and region is not None and not off:
            area = tile_area(images[view], model.tile) if model.attention_by_area else None
            scores |= localise_tiles(attention[view], region, model.tile, area)
        if off:
            problems.add(
                "region off the input",
                f"{where} {view.value}: the marked region lies outside the breast the model was given (cut "
                "away by the crop?); not scored",
            )
        records.append({"view": view.value} | scores)
    return records


class PredictedChecks:
    """The checks of breasts scored by `predict` (`scored`: its output rows, with `truth` where labels were
    given), one breast at a time as `explain_cases` computes its maps (each the mean of the bundle's
    networks); `frame()` gathers them."""

    def __init__(
        self, scored: pd.DataFrame, marked: dict[RegionKey, list[Region]], problems: Problems, cfg: Config
    ) -> None:
        self.by_row, self.marked, self.problems, self.cfg = scored.set_index("row"), marked, problems, cfg
        self.fresh: TwoViewNet | None = None  # the network with its weights drawn afresh
        self.records: list[dict] = []

    def __call__(self, row: int, case: CaseInput, images: Maps, maps: tuple[Maps, Maps | None]) -> None:
        cfg, line = self.cfg, self.by_row.loc[row]
        if self.fresh is None:
            self.fresh = redrawn(cfg.model, len(case.clinical[0]), cfg.train.seed)
        x = {v: torch.from_numpy(images[v])[None, None] for v in VIEWS}
        other = gradcam(self.fresh, x[View.CC], x[View.MLO], torch.from_numpy(case.clinical[0])[None])
        regions = regions_of(self.marked, line["patient_id"], line["side"])
        label = line["truth"] if "truth" in line and pd.notna(line["truth"]) else float("nan")
        breast = {"row": row, "patient": line["patient_id"], "side": line["side"], "label": label}
        breast |= {"probability": float(line["probability"])}
        fresh_maps = {v: other[v][0] for v in VIEWS}
        own, attention = maps
        problems, where = self.problems, f"row {row}"
        for scores in score_case(
            case, images, own, fresh_maps, attention, regions, cfg.model, problems, where
        ):
            self.records.append(breast | scores)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records)


@dataclass(frozen=True)
class Sampled:
    """A held-out breast whose maps go through the cascading randomisation: who it is (its row in data.csv,
    patient and side), the model's input and the model's maps."""

    breast: dict[str, object]
    images: Maps
    clinical: np.ndarray
    maps: Maps


def cascade_table(
    net: TwoViewNet, draws: list[TwoViewNet], sample: list[Sampled], batch: int = 16
) -> pd.DataFrame:
    """The cascading randomisation of `net` towards each network of `draws` (the same architecture, weights
    drawn afresh: `checks.cascade`) over `sample`: a row per breast, view and draw (the breast's columns,
    view, draw), a column per stage (`Stage.column`) holding the rank correlation of that stage's map with
    the model's over the breast's pixels (NaN where either map is blank)."""
    breast = [{v: breast_mask(s.images[v]) for v in VIEWS} for s in sample]
    rho: dict[tuple[int, int, View], dict[str, float]] = {}
    stages = ((d, stage, model) for d, fresh in enumerate(draws) for stage, model in cascade(net, fresh))
    total = len(draws) * len(cascade_stages(net))  # one network changed in place from stage to stage: lazily
    for d, stage, model in progress("cascading randomisation")(stages, total):
        for start in range(0, len(sample), batch):
            chunk = sample[start : start + batch]
            x = {v: torch.from_numpy(np.stack([s.images[v] for s in chunk]))[:, None] for v in VIEWS}
            c = torch.from_numpy(np.stack([s.clinical for s in chunk]))
            maps = gradcam(model, x[View.CC], x[View.MLO], c)
            for i, s in enumerate(chunk):
                for v in VIEWS:
                    within = breast[start + i][v]
                    rho.setdefault((d, start + i, v), {})[stage.column] = rank_correlation(
                        s.maps[v], maps[v][i], within
                    )
    records = [sample[i].breast | {"view": v.value, "draw": d} | r for (d, i, v), r in rho.items()]
    return pd.DataFrame(records)


def sample_of(n: int, size: int, seed: int) -> list[int]:
    """`size` of n positions drawn without replacement (all of them where there are fewer), in order."""
    return sorted(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False).tolist())


def check_maps(
    run: Run,
    marked: dict[RegionKey, list[Region]],
    problems: Problems,
    batch: int = 16,
    cascading: int = CASCADE_BREASTS,
    draws: int = CASCADE_DRAWS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both checks of `explain.checks` over a run's test breasts: a row per breast and view (its row in
    data.csv, patient, label, probability, then `score_map`'s figures); and the cascading randomisation
    (`cascade_table`, over `draws` draws of the random weights) of `cascading` of them, drawn with the run's
    seed (empty for none). Regions that the crop cut away are recorded in `problems`."""
    cfg, data, encoder, net = run.read_config(), run.cached_data(), run.read_encoder(), run.read_net()
    pred, rows = test_predictions(run, data)
    probability = pred["probability"].to_numpy()
    clinical = encoder.transform(data.loc[rows])
    fresh = redrawn(cfg.model, clinical.shape[1], cfg.train.seed)  # the cascade's first draw, its last stage
    chosen, sample = set(sample_of(len(rows), cascading, cfg.train.seed)), []
    records = []
    starts = range(0, len(rows), batch)
    for start in progress(f"checking the maps of {run.dir.name}")(starts, len(starts)):
        chunk = rows[start : start + batch]
        cases = [case_from_row(data.loc[r], []) for r in chunk]
        images = [c.read_images() for c in cases]
        x = {v: torch.from_numpy(np.stack([i[v] for i in images]))[:, None] for v in VIEWS}
        c = torch.from_numpy(clinical[start : start + batch])
        maps = gradcam(net, x[View.CC], x[View.MLO], c)
        fresh_maps = gradcam(fresh, x[View.CC], x[View.MLO], c)
        attention = attention_maps(net, x[View.CC], x[View.MLO], c)  # a patch model's; None otherwise
        for i, (r, case) in enumerate(zip(chunk, cases)):
            row = data.loc[r]
            regions = regions_of(marked, row["patient_id"], row["side"])
            own = {v: maps[v][i] for v in VIEWS}
            other = {v: fresh_maps[v][i] for v in VIEWS}
            tiles = {v: attention[v][i] for v in VIEWS} if attention is not None else None
            breast = {"row": r + 1, "patient": row["patient_id"], "side": row["side"]}
            breast |= {"label": int(row["label"]), "probability": float(probability[start + i])}
            where = f"row {r + 1}"
            for scores in score_case(case, images[i], own, other, tiles, regions, cfg.model, problems, where):
                records.append(breast | scores)
            if start + i in chosen:
                who = {k: breast[k] for k in ("row", "patient", "side")}
                sample.append(Sampled(who, images[i], clinical[start + i], own))
    more = (redrawn(cfg.model, clinical.shape[1], cfg.train.seed, d) for d in range(1, draws))
    return pd.DataFrame(records), cascade_table(net, [fresh, *more] if sample else [], sample, batch)


def checks_table(
    run: Run,
    marked: dict[RegionKey, list[Region]],
    problems: Problems,
    cascading: int = CASCADE_BREASTS,
    draws: int = CASCADE_DRAWS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`check_maps` over a run's test breasts, or over every breast of a finished cross-validation, each
    by the fold model that never saw it (a column `fold` in both tables); the cascading randomisation on
    `cascading` breasts, over `draws` draws of the random weights. A cross-validation's are shared out among
    its fold models (at least one breast each): ten of them cost about what one run costs, not ten times."""
    if not run.is_cv:
        return kept_checks(run, marked, problems, cascading, draws)
    if not run.metrics.is_file():  # then every fold is finished, and a finished fold is never trained over
        raise DataError(f"{run.dir}: the cross-validation is not finished; run `mammofuse cv` to finish it")
    folds = run.fold_runs()
    each = -(-cascading // len(folds))  # rounded up
    tables, cascades = [], []
    for fold in folds:
        table, cascade = kept_checks(fold, marked, problems, each, draws)
        tables.append(table.assign(fold=fold.dir.name))
        cascades.append(cascade.assign(fold=fold.dir.name))
    return pd.concat(tables), pd.concat(cascades)


TABLES = ("table", "cascade")
KEPT_CHECKS = "checks-kept.json"  # in a model's explain/: its checks, for the next explain to take up


@cache
def source_digest() -> str:
    """The SHA-256 of mammofuse's code: checks kept by other code are not taken up."""
    root = Path(__file__).parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def checked_files(run: Run) -> tuple[Path, ...]:
    """The files of a model that its checks follow from: its weights, its breasts, its settings."""
    return run.checkpoint("best"), run.data, run.config


def checks_key(run: Run, marked: dict[RegionKey, list[Region]], cascading: int, draws: int) -> dict:
    """What a model's checks follow from: `checked_files`, the regions, the settings, the code."""
    files = {}
    for path in checked_files(run):
        with path.open("rb") as fh:
            files[path.name] = hashlib.file_digest(fh, "sha256").hexdigest()
    regions = sorted(f"{key!r} {value!r}" for key, value in marked.items())
    return files | {
        "regions": hashlib.sha256("\n".join(regions).encode()).hexdigest(),
        "cascade": [cascading, draws],
        "code": source_digest(),
    }


def kept_checks(
    run: Run, marked: dict[RegionKey, list[Region]], problems: Problems, cascading: int, draws: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`check_maps` of one model, kept in its explain/ folder with the problems it recorded: an explain that
    stops (a cross-validation's later fold, Ctrl-C) takes up the models it finished, and a later explain of
    the same model, breasts, regions and settings takes them up too: the same result, not computed again."""
    if not all(p.is_file() for p in checked_files(run)):
        return check_maps(run, marked, problems, cascading=cascading, draws=draws)  # it says what is missing
    key, kept = checks_key(run, marked, cascading, draws), run.explain / KEPT_CHECKS
    try:
        earlier = json.loads(kept.read_text(encoding="utf-8"))
        if earlier["key"] == key:
            tables = [pd.DataFrame(earlier[t]["data"], columns=earlier[t]["columns"]) for t in TABLES]
            taken = [Problem(**p) for p in earlier["problems"]]
            console.print(f"the maps of {run.dir.name}: checked by an earlier explain ({kept.name})")
            problems.items.extend(taken)
            return tables[0], tables[1]
    except (OSError, ValueError, KeyError, TypeError):  # none, or not as written here: checked again
        pass
    before = len(problems.items)
    table, cascade = check_maps(run, marked, problems, cascading=cascading, draws=draws)
    written = {"key": key, "problems": [asdict(p) for p in problems.items[before:]]}
    for name, frame in zip(TABLES, (table, cascade), strict=True):
        written[name] = frame.to_dict(orient="split", index=False)  # floats as repr: read back exactly
    kept.parent.mkdir(parents=True, exist_ok=True)
    replace_text(kept, json.dumps(written))
    return table, cascade


def unmatched(run: Run, marked: dict[RegionKey, list[Region]]) -> int:
    """How many of the marked images name no breast of the run (of any fold of a cross-validation): a
    regions file whose patient IDs are written otherwise than the labels' matches nothing."""
    known: set[tuple[str, str]] = set()
    for r in run.fold_runs() if run.is_cv else [run]:
        data = r.read_data()
        known |= set(zip(data["patient_id"], data["side"]))
    return sum((patient, side.value) not in known for patient, side, _ in marked)


def write_checks(
    run: Run,
    table: pd.DataFrame,
    regions: str | None,
    left_out: list[str],
    marked: dict[RegionKey, list[Region]] | None = None,
    cascade: pd.DataFrame | None = None,
) -> dict:
    """explain/checks.csv (a row per breast and view, named by its row in data.csv, never by patient),
    explain/checks.json (the summary, returned, with the lines of `left_out` and, given the `marked`
    images, how many of them name no breast of the run) and, where the cascading randomisation ran,
    explain/cascade.csv and cascade.png (none otherwise: earlier ones would not be of these maps)."""
    extra = None
    if regions is not None and marked is not None:
        extra = {"marked_images": len(marked), "unmatched_images": unmatched(run, marked)}
    cfg = run.read_config()
    summary = save_checks(
        table, cfg, regions, left_out, run.explain_checks, run.explain_summary, extra, cascade
    )
    for path in (run.explain_cascade, run.explain_cascade_table):
        path.unlink(missing_ok=True)
    if cascade is not None and summary["randomisation"]["cascade"] is not None:
        write_table(cascade.drop(columns="patient"), run.explain_cascade_table)
        cascade_figure(cascade, INSENSITIVE).savefig(run.explain_cascade, dpi=100)
    return summary


def index_with_hits(run: Run, table: pd.DataFrame) -> pd.DataFrame:
    """explain/index.csv with, per drawn breast and view, whether its map's peak lies on the marked tumour
    (cc_on_tumour, mlo_on_tumour: 1, 0, or empty where nothing is marked or the map is blank)."""
    index = pd.read_csv(run.explain_index)
    if "hit" in table:
        for view in VIEWS:
            hits = table[table["view"] == view.value].drop_duplicates("row").set_index("row")["hit"]
            index[f"{view.value.lower()}_on_tumour"] = index["row"].map(hits).astype("Int64")
    write_table(index, run.explain_index)
    return index


def save_checks(
    table: pd.DataFrame,
    cfg: Config,
    regions: str | None,
    left_out: list[str],
    csv: Path,
    summary_json: Path,
    localisation: dict | None = None,
    cascade: pd.DataFrame | None = None,
) -> dict:
    """The checks' table, by row number and never by patient, and their summary (`summarise`, with the
    lines of `left_out`, `localisation`'s counts added to its localisation part where there is one, and the
    `cascade` summarised), which is returned."""
    seed = cfg.train.seed
    summary = summarise(table, cfg.labels.positive, regions, seed, cascade) | {"left_out": left_out}
    if summary["localisation"] is not None and localisation:
        summary["localisation"] |= localisation
    csv.parent.mkdir(parents=True, exist_ok=True)
    write_table(table.drop(columns="patient"), csv)
    replace_text(summary_json, json.dumps(summary, indent=2))
    return summary


def check_run(
    run_dir: Path,
    regions: Path | None = None,
    problems: Problems | None = None,
    cascading: int = CASCADE_BREASTS,
    draws: int = CASCADE_DRAWS,
) -> dict:
    """The checks of a run or a cross-validation, written (`write_checks`); the summary returned.
    `regions`: a CSV of marked tumours; what of it cannot be used is recorded in `problems`; `cascading`:
    the breasts of each model whose maps go through the cascading randomisation, over `draws` draws."""
    run, problems = Run(run_dir), problems if problems is not None else Problems()
    marked = read_regions(regions, problems) if regions is not None else {}
    table, cascade = checks_table(run, marked, problems, cascading, draws)
    left_out = [p.reason for p in problems.items]
    return write_checks(run, table, regions.name if regions else None, left_out, marked, cascade)
