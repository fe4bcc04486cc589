"""One typed, validated configuration for a cohort and what is done with it (a TOML file).

Two kinds of settings live in one file. The cohort part ([images], [labels], [clinical], [split]) says
what the data is: it is fixed once a work folder is ingested and split, and `CohortConfig.record`
lets a later stage check it has not changed. The experiment part ([preprocess], [data], [model],
[train]) says what is done with the data: presets and command-line overrides may touch only it.

Relative paths are relative to the config file's folder. Unknown keys and bad values are errors
that name the key and say what is allowed; the resolved config is written into every output folder.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mammofuse.registry import BACKBONES
from mammofuse.storage import replace_text
from mammofuse.units import UNITS, Unit


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (key, what was found, what is allowed)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _known_encoding(value: str) -> str:
    import codecs

    if value != "auto":
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"unknown text encoding {value!r} (e.g. 'auto', 'utf-8', 'cp1252', 'shift_jis')"
            ) from None
    return value


Encoding = Annotated[str, AfterValidator(_known_encoding)]
ID_WIDTH_HELP = (
    "pad an all-digit patient ID with leading zeros to this many digits, as the images write it (a "
    "spreadsheet that took the IDs for numbers dropped them: 123 -> 00000123); 0: as written"
)
ENCODING_HELP = (
    "the CSV's text encoding: 'auto' (a byte-order mark's, else UTF-8, else Windows-1252 with a warning) "
    "or a Python codec's name (e.g. 'cp1252', 'shift_jis')"
)
SHEET_HELP = (
    "an Excel workbook's sheet to read, by its name; '' (default): the first sheet that has the table's "
    "key columns (a warning names any other that has them too). Not used for a CSV"
)


class TableColumns(_Section):
    path: str = "path"
    patient: str = "patient_id"
    side: str = "side"
    view: str = "view"


class ImagesConfig(_Section):
    """Where the images are and how to tell patient, side and view apart."""

    source: Literal["dicom", "table"] = Field(
        "dicom", description="'dicom': scan a tree and read headers; 'table': an image-table CSV"
    )
    root: Path = Field(Path("dicom"), description="folder with the DICOM files (scanned recursively)")
    table: Path | None = Field(
        None, description="image-table CSV (path, patient, side, view) for source='table'"
    )
    table_columns: TableColumns = TableColumns()
    table_encoding: Encoding = Field("auto", description=ENCODING_HELP)
    side_pattern: str | None = Field(None, description="regex on the relative path with a group 'side'")
    view_pattern: str | None = Field(None, description="regex on the relative path with a group 'view'")
    patient_pattern: str | None = Field(
        None, description="regex on the relative path with a group 'patient'; replaces PatientID"
    )
    allow_outside_root: bool = Field(
        False, description="source='table': accept table paths that resolve outside images.root"
    )
    check_patient_id: bool = Field(
        True,
        description="source='table': exclude an image whose header PatientID differs from its table row "
        "(false where the table uses other IDs than the headers)",
    )
    accept_secondary_capture: bool = Field(
        False,
        description="accept Secondary Capture images (digitised film such as CBIS-DDSM, screenshots); "
        "other SOP classes than mammography (or CR / DX with Modality MG) are always left out",
    )
    presentation_intent: Literal["presentation", "processing", "any"] = Field(
        "presentation",
        description="which kind of image an export that holds both gives the model: 'presentation' (FOR "
        "PRESENTATION, processed by the unit for reading: what a radiologist sees), 'processing' (FOR "
        "PROCESSING, the detector's raw data) or 'any'. Each image of the other kind is left out with its "
        "reason, before duplicate_policy: a cohort that mixes them trains on two kinds of image",
    )
    view_modifiers: Literal["exclude", "keep"] = Field(
        "exclude",
        description="'exclude' images whose view carries a modifier (ViewModifierCodeSequence: spot "
        "compression, magnification, implant displaced, ...), each with its reason, so that a breast's CC "
        "and MLO are its standard views; 'keep' treats them as their view (duplicate_policy chooses)",
    )
    synthetic_2d: Literal["exclude", "keep"] = Field(
        "exclude",
        description="'exclude' synthetic 2D images (computed from a tomosynthesis scan: Hologic C-View, GE "
        "V-Preview, Siemens Insight 2D, Fujifilm S-View), recognised by synthetic_2d_pattern in their "
        "SeriesDescription or ProtocolName, each with its reason, so that a cohort does not mix them with "
        "full-field digital mammograms; 'keep' treats them as their view (duplicate_policy chooses)",
    )
    synthetic_2d_pattern: str = Field(
        r"\b(c-?view|v-?preview|s-?view|insight ?2d)\b|\bsynthe(tic|si[sz]ed) ?2d\b",
        description="regular expression (case-insensitive) on SeriesDescription and ProtocolName that marks "
        "a synthetic 2D image",
    )
    implants: Literal["exclude", "keep"] = Field(
        "exclude",
        description="'exclude' images of a breast with an implant (BreastImplantPresent YES), each with its "
        "reason: the implant covers much of the breast and changes how it looks; 'keep' uses them",
    )
    duplicate_policy: Literal["first", "last", "largest", "error"] = Field(
        "first", description="more than one image for a view of a breast: which to keep (by path order)"
    )
    exam_policy: Literal["latest", "earliest", "before_label_date"] = Field(
        "latest",
        description="several exams of a breast (StudyInstanceUID, dated by StudyDate): the latest, the "
        "earliest, or the latest on or before the breast's date in labels.date_column (e.g. the surgery)",
    )

    @field_validator("side_pattern", "view_pattern", "patient_pattern")
    @classmethod
    def _regex_with_group(cls, value: str | None, info: Any) -> str | None:
        import re

        if value is None:
            return value
        group = info.field_name.removesuffix("_pattern")
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        if group not in compiled.groupindex:
            raise ValueError(f"the pattern needs a named group (?P<{group}>...)")
        return value

    @field_validator("synthetic_2d_pattern")
    @classmethod
    def _a_regex(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _table_needs_path(self) -> ImagesConfig:
        if self.source == "table" and self.table is None:
            raise ValueError("source = 'table' needs images.table (the image-table CSV)")
        return self


class LabelsConfig(_Section):
    """The label CSV: a binary endpoint, or the invasive fraction with a threshold."""

    path: Path = Path("labels.csv")
    encoding: Encoding = Field("auto", description=ENCODING_HELP)
    sheet: str = Field("", description=SHEET_HELP)
    patient_column: str = "patient_id"
    patient_id_width: int = Field(0, ge=0, le=64, description=ID_WIDTH_HELP)
    side_column: str = Field("side", min_length=1, description="the column naming the breast's side")
    kind: Literal["fraction", "binary"] = Field(
        "fraction", description="'fraction': invasive fraction in %; 'binary': a 0/1 column"
    )
    column: str = Field("invasive_fraction", description="the column holding the fraction or the 0/1 label")
    date_column: str | None = Field(
        None,
        description="a date per breast (surgery, diagnosis; YYYY-MM-DD, YYYYMMDD, DD.MM.YYYY, DD/MM/YYYY, "
        "MM/DD/YYYY (see date_order) or a spreadsheet's day number) "
        "for images.exam_policy = 'before_label_date'",
    )
    date_order: Literal["auto", "day_first", "month_first"] = Field(
        "auto",
        description="how date_column's slashed dates are written: 'day_first' (25/03/2024), 'month_first' "
        "(03/25/2024, US exports), or 'auto': as a date whose day is over 12 shows",
    )
    threshold: float = Field(
        75.0,
        gt=0,
        le=100,
        description="fraction >= threshold (in percent) is negative (0), below is positive (1)",
    )
    scale: Literal["percent", "fraction"] = Field(
        "percent", description="kind = 'fraction': values in percent (0-100) or as fractions (0-1)"
    )
    name: str = Field("EIC", min_length=1, description="the endpoint's name, as reports and logs show it")
    positive: str = Field("EIC positive", min_length=1, description="what label 1 is called")
    negative: str = Field("EIC negative", min_length=1, description="what label 0 is called")
    recode: dict[str, str] = Field(
        {},
        description="value as written -> value as read, before the label is read from it, matched without "
        "case or spaces (e.g. { yes = '1', no = '0' } for kind = 'binary', which also reads the names "
        "`positive` and `negative`; { 'pure DCIS' = '0' } for a fraction)",
    )

    @property
    def definition(self) -> str:
        """The endpoint in one line: how label 1 and label 0 are decided."""
        if self.kind == "fraction":
            return (
                f"{self.positive} (label 1): {self.column} < {self.threshold:g} %; "
                f"{self.negative} (label 0): {self.column} >= {self.threshold:g} %"
            )
        return f"{self.positive} (label 1): {self.column} = 1; {self.negative} (label 0): {self.column} = 0"


class ClinicalConfig(_Section):
    """The clinical CSV and which of its columns are features."""

    use: bool = Field(True, description="false: no clinical data; the model is image only")
    path: Path | None = Field(Path("clinical.csv"), description="the clinical CSV ('': none, as use = false)")
    encoding: Encoding = Field("auto", description=ENCODING_HELP)
    sheet: str = Field("", description=SHEET_HELP)
    patient_column: str = "patient_id"
    patient_id_width: int = Field(0, ge=0, le=64, description=ID_WIDTH_HELP)
    side_column: str = Field(
        "side",
        description="the column naming the breast's side; '' for a table of one row per patient, whose "
        "values hold for both breasts",
    )
    numeric: list[str] = ["age", "tumour_size_mm", "ki67"]
    categorical: list[str] = ["grade", "er", "pr", "her2", "density"]
    na_policy: Literal["drop", "impute"] = Field(
        "drop",
        description="'drop' rows with a missing value (the study), or 'impute' from the training split",
    )
    rename: dict[str, str] = Field(
        {},
        description='CSV column -> the name `numeric` and `categorical` use (e.g. { Alter = "age" }): '
        "another export's columns read as the model's features",
    )
    recode: dict[str, dict[str, str]] = Field(
        {},
        description="feature -> { value as written -> value as the features use it } (e.g. { er = { pos = "
        '"positive", neg = "negative" } }), matched without case or spaces; other values are read as written',
    )
    ranges: dict[str, tuple[float, float]] = Field(
        {},
        description="numeric feature -> [lowest, highest] value it can take (e.g. { age = [18, 110], ki67 = "
        "[0, 100] }): a value outside is a typo, written down and treated as missing (na_policy decides). "
        "Without one, a value far outside its column's others is only warned about",
    )
    units: dict[str, Unit] = Field(
        {},
        description='numeric feature -> the unit its values are in as the features use them ("mm", "cm", '
        '"years", "percent" or "fraction"; e.g. { tumour_size_mm = "mm", ki67 = "percent" }): a cell that '
        'writes a unit of that kind ("2.3 cm", "23mm", "56 y", "20 %") is read in it. Without one, such a '
        'cell is not a number (but "20 %", read as 20)',
    )
    written_in: dict[str, Unit] = Field(
        {},
        description="numeric feature -> the unit this file writes its plain numbers in, where it is not "
        'the feature\'s (units): { tumour_size_mm = "cm" } reads a site that writes centimetres, '
        'converted to the feature\'s millimetres; { ki67 = "fraction" } one that writes 0.2 for 20 %',
    )

    @model_validator(mode="before")
    @classmethod
    def _no_clinical_data(cls, data: Any) -> Any:
        """use = false or path = '' (TOML has no null): one way to say it from here on."""
        if isinstance(data, dict) and (data.get("use") is False or ("path" in data and not data["path"])):
            cleared: dict[str, Any] = {
                "use": False,
                "path": None,
                "numeric": [],
                "categorical": [],
                "recode": {},
                "ranges": {},
                "units": {},
                "written_in": {},
            }
            return {**data, **cleared}
        return data

    @model_validator(mode="after")
    def _columns_disjoint(self) -> ClinicalConfig:
        both = sorted(set(self.numeric) & set(self.categorical))
        if both:
            raise ValueError(f"columns listed as both numeric and categorical: {both}")
        return self

    @model_validator(mode="after")
    def _renamed_and_recoded_features(self) -> ClinicalConfig:
        targets = list(self.rename.values())
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"rename: several columns renamed to {twice}")
        keys = {self.patient_column, self.side_column}
        if keys & set(targets):
            raise ValueError(f"rename: a column renamed to a key column ({sorted(keys & set(targets))})")
        unknown = sorted(set(self.recode) - set(self.numeric) - set(self.categorical))
        if unknown:
            raise ValueError(f"recode: {unknown} not among the features (numeric, categorical)")
        unknown = sorted(set(self.ranges) - set(self.numeric))
        if unknown:
            raise ValueError(f"ranges: {unknown} not among the numeric features")
        for column, (low, high) in self.ranges.items():
            if not low < high:
                raise ValueError(f"ranges: {column} = [{low:g}, {high:g}] holds no value (lowest first)")
        unknown = sorted(set(self.units) - set(self.numeric))
        if unknown:
            raise ValueError(f"units: {unknown} not among the numeric features")
        for column, unit in self.written_in.items():
            if column not in self.units:
                raise ValueError(f"written_in: {column} needs the unit the feature itself is in (units)")
            if UNITS[unit][0] != UNITS[self.units[column]][0]:
                raise ValueError(
                    f"written_in: {column} = {unit!r} measures {UNITS[unit][0]}, the feature's unit "
                    f"{self.units[column]!r} (units) {UNITS[self.units[column]][0]}"
                )
        return self


class PreprocessConfig(_Section):
    """Decoding, orientation, breast crop and resize; every field here keys the cache."""

    mode: Literal["breast", "seed_parity"] = Field(
        "breast",
        description="'breast': crop to the breast, keep aspect, pad; "
        "'seed_parity': the study's square resize + centre crop",
    )
    size: tuple[int, int] = Field((1024, 512), description="output (height, width) in 'breast' mode")
    parity_resize: int = Field(256, ge=8, description="seed_parity: square resize before the centre crop")
    parity_crop: int = Field(200, ge=8, description="seed_parity: side of the square centre crop")
    voi: Literal["window", "none"] = Field(
        "window", description="'window': apply the file's VOI LUT or window when present; 'none': full range"
    )
    margin: float = Field(
        0.02, ge=0, le=0.5, description="margin around the breast box, fraction of its size"
    )
    spacing_mm: float | None = Field(
        None,
        gt=0,
        description="'breast' mode: resample every image to this pixel spacing (mm, from ImagerPixelSpacing, "
        "else PixelSpacing), so that `size` is one physical field of view and a calcification has the same "
        "size in pixels on every detector; beyond the field the breast is cut (chest wall kept). Images "
        "without a spacing are fitted to `size` as without this setting, with a warning. Unset: the breast "
        "box is fitted to `size`",
    )
    blank_outside_breast: bool = Field(
        True,
        description="'breast' mode: set everything outside the (dilated) breast mask to black, so burned-in "
        "markers and labels inside the crop box never reach the model",
    )
    jpeg2000: Literal["full", "reduced"] = Field(
        "full",
        description="'breast' mode: 'reduced' decodes a JPEG 2000 image at the coarsest of its wavelet "
        "levels that still holds at least the output's pixels across the breast (each level halves each "
        "side and decodes about 4x faster; its values are the image low-pass filtered, not box-averaged: "
        "the arrays differ slightly from 'full'); 'full' decodes every pixel, then shrinks",
    )
    cache_dir: Path | None = Field(None, description="where arrays are cached (default: WORK_DIR/cache)")
    workers: int = Field(0, ge=0, description="worker processes; 0 uses every core")
    cluster: str | None = Field(
        None,
        pattern=r"^(dask://\S+|local:\d+)$",
        description="decode on a Dask cluster instead of local processes: 'dask://HOST:PORT' (a running "
        "scheduler whose workers see the same files) or 'local:N' (N worker processes started here)",
    )

    @field_validator("size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 8:
            raise ValueError("size must be at least 8x8 pixels")
        return value

    @model_validator(mode="after")
    def _crop_fits(self) -> PreprocessConfig:
        if self.parity_crop > self.parity_resize:
            raise ValueError(
                f"parity_crop {self.parity_crop} is larger than parity_resize {self.parity_resize}"
            )
        return self

    def settings(self) -> dict[str, Any]:
        """The fields that change the arrays (what the cache key hashes)."""
        settings = self.model_dump(mode="json", exclude={"cache_dir", "workers", "cluster"})
        if self.jpeg2000 == "full":  # as before the setting existed: the caches made then are used
            del settings["jpeg2000"]
        return settings

    @property
    def output_shape(self) -> tuple[int, int]:
        if self.mode == "seed_parity":
            return (self.parity_crop, self.parity_crop)
        return tuple(self.size)  # type: ignore[return-value]


class SplitConfig(_Section):
    """Patient-grouped, label-stratified split (the study: 10 % test, 10 % of the rest validation)."""

    method: Literal["random", "temporal"] = Field(
        "random",
        description="the test split: 'random' (patient-grouped, label-stratified, seeded: the study's) or "
        "'temporal' (the patients examined last, by StudyDate, until test_fraction of the breasts: a model "
        "trained on the past, tested on the later patients; validation stays random). "
        "Cross-validation's folds are random either way",
    )
    date: Literal["exam", "label"] = Field(
        "exam",
        description="what 'temporal' orders the patients by: 'exam' (the images' StudyDate) or 'label' (the "
        "date in labels.date_column, e.g. the surgery: for an export whose de-identification removed or "
        "replaced the StudyDates)",
    )
    seed: int = 0
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    folds: int = Field(
        0, ge=0, description="0: one test/val/train split; k >= 2: k folds (`mammofuse cv` uses 5 when 0)"
    )
    repeats: int = Field(
        1, ge=1, description="`mammofuse cv`: repetitions of the k folds, each with a new seed"
    )

    @property
    def dated_by(self) -> Literal["exam", "label"]:
        """The dates a split is shown (and, temporal, made) by: the labels' only where made by them."""
        return self.date if self.method == "temporal" else "exam"

    @field_validator("folds")
    @classmethod
    def _not_one(cls, value: int) -> int:
        if value == 1:
            raise ValueError("folds must be 0 (a single split) or at least 2")
        return value


class DataConfig(_Section):
    """Balancing and augmentation of the training split (validation and test are never touched)."""

    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="the share of the training split a model learns from: whole patients, as many of each "
        "label mix as this share of them, drawn with split.seed and nested (a smaller share keeps a subset "
        "of a larger one's patients); validation and test stay whole. Below 1 for a learning curve "
        "(`mammofuse curve`)",
    )
    balance: Literal["none", "copy", "augment", "sampler"] = Field(
        "none",
        description="'copy' positives k times; 'augment' add rotated/scaled positives up to balance; "
        "'sampler' a class-weighted sampler",
    )
    copies: int = Field(3, ge=1, description="balance='copy': each positive appears this many times")
    augment: bool = Field(True, description="standard augmentation (small affine, vertical flip, intensity)")
    augment_rotation_deg: float = Field(
        5.0, ge=0, le=45, description="standard augmentation: random rotation up to this many degrees"
    )
    rotation_deg: float = Field(
        10.0, ge=0, le=45, description="balance='augment': random rotation of the added positives (degrees)"
    )
    scale: float = Field(
        0.1, ge=0, lt=0.5, description="balance='augment': random zoom in [1 - scale, 1 + scale]"
    )


class ModelConfig(_Section):
    """The two-view + clinical network (built by `mammofuse.models.create_model`)."""

    backbone: str = Field(
        "resnet18",
        description="backbone per view: "
        + ", ".join(BACKBONES)
        + " ('tiny_cnn' is a small CPU-sized network)",
    )
    pretrained: str = Field(
        "imagenet",
        description="'none', 'imagenet' (torchvision weights API, cached), or a local weights file path",
    )
    shared_backbone: bool = Field(
        False, description="one backbone for both views (False: separate, as the study)"
    )
    grey: Literal["replicate", "adapt"] = Field(
        "replicate", description="grey input: replicate to 3 channels, or adapt the first convolution to 1"
    )
    clinical_hidden: int = Field(0, ge=0, description="0: clinical vector joins directly; >0: through an MLP")
    fusion: Literal["concat", "mlp", "late"] = Field(
        "concat",
        description="'concat': pooled image features and the clinical vector side by side (the study); "
        "'mlp': both normalised to one scale (LayerNorm), the clinical vector through an MLP "
        "(clinical_hidden, default 16) and dropout on the image branch, so the many image features cannot "
        "drown the few clinical ones; 'late': the network sees the images only, and a logistic regression "
        "on its logit and the clinical vector, fitted on the validation breasts, makes the probability",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the linear head")
    kind: Literal["whole", "patches"] = Field(
        "whole",
        description="'whole': the backbone sees each view whole and its feature map is averaged (the study); "
        "'patches': each view is cut into tiles at the working resolution, the backbone encodes every tile "
        "with breast in it, and attention pools the tiles (calcifications stay at full resolution)",
    )
    tile: int = Field(128, ge=32, description="patches: tile side in pixels (best a multiple of 32)")
    attention_hidden: int = Field(64, ge=4, description="patches: width of the attention network")
    tile_batch: int = Field(0, ge=0, description="patches: tiles encoded per pass (0: all); bounds memory")
    attention_by_area: bool = Field(
        False,
        description="patches: attention over the breast's area rather than its tiles: a tile weighs by its "
        "score times the share of its pixels that are breast, so a sliver at the breast's edge cannot draw "
        "the attention a whole tile of tissue would",
    )
    auxiliary: dict[str, float] = Field(
        {},
        description="clinical columns the network also learns to predict from the images, with their loss "
        "weights (e.g. {her2 = 0.3, grade = 0.2}); these columns are then not inputs",
    )
    checkpoint_tiles: bool = Field(
        False, description="patches: recompute tile features in the backward pass (less memory, more time)"
    )

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str) -> str:
        if value not in BACKBONES:
            raise ValueError(f"unknown backbone (known: {', '.join(BACKBONES)})")
        return value

    @model_validator(mode="after")
    def _weights_exist(self) -> ModelConfig:
        if self.pretrained == "imagenet" and not BACKBONES[self.backbone].imagenet:
            raise ValueError(
                f"{self.backbone} has no ImageNet weights: use pretrained = 'none' or a local weights file"
            )
        return self


class TrainConfig(_Section):
    """Optimisation (defaults: the study's SGD, lr 0.001, momentum 0.9)."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.001, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["none", "cosine"] = "none"
    backbone_lr_mult: float = Field(
        1.0, gt=0, le=1, description="backbone lr = lr x this (lower: less overfit)"
    )
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for the first N epochs")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    seed: int = 0
    num_workers: int = Field(-1, ge=-1, description="loader processes; -1: 0 on CPU, up to 8 on a GPU")
    devices: str = Field("auto", description="Lightning devices ('auto', 1, '0,1', ...)")
    ddp: bool = Field(False, description="distributed data parallel over the devices")
    nodes: int = Field(1, ge=1, description="machines taking part in DDP (each runs the same command)")
    shuffle_labels: bool = Field(False, description="leakage guard: shuffle labels within the training split")
    augment_on: Literal["auto", "loader", "device"] = Field(
        "auto",
        description="where training images are augmented: 'loader' (each image in the loader's processes), "
        "'device' (batches travel as 16-bit integers and are augmented as a whole batch where the model is: "
        "the GPU, or the CPU, where it is also faster), 'auto' (device; data.balance = 'augment' always uses "
        "the loader)",
    )
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = Field(
        "auto",
        description="'auto': bf16-mixed on a GPU that supports it, 16-mixed on other GPUs, 32-true on "
        "the CPU (deterministic)",
    )
    compile: bool = Field(
        False,
        description="torch.compile the network (a GPU speed-up; runs uncompiled, with a message, "
        "where compilation fails)",
    )
    checkpoint: Literal["best", "last"] = Field(
        "best",
        description="the epoch whose weights the run keeps (evaluate, explain, bundle): 'best' (the study's: "
        "the highest validation AUC, a choice on the validation breasts that flatters their AUC and follows "
        "their noise) or 'last' (the final epoch: nothing chosen; pair it with a schedule that ends low)",
    )
    ema_epochs: float = Field(
        0.0,
        ge=0,
        description="average the weights over about this many epochs (an exponential moving average, "
        "updated after every step; 0: off). Validation scores the average, and the checkpoints, evaluation, "
        "Grad-CAM and the bundle use it: it follows single batches less, and so do the validation AUC from "
        "epoch to epoch and the epoch it keeps",
    )


COHORT_SECTIONS = ("images", "labels", "clinical", "split")
EXPERIMENT_SECTIONS = ("preprocess", "data", "model", "train")


def _path_fields(cfg: BaseModel) -> list[tuple[BaseModel, str]]:
    """(section, field) of every path in a config, so they can be resolved or made relative together."""
    found: list[tuple[BaseModel, str]] = []
    for name in ("work_dir", "images", "labels", "clinical", "preprocess"):
        section = getattr(cfg, name, None)
        if section is None:
            continue
        if isinstance(section, Path):
            found.append((cfg, name))
            continue
        found += [
            (section, f) for f in ("root", "table", "path", "cache_dir") if f in type(section).model_fields
        ]
    return found


def _map_paths(cfg: BaseModel, fn: Callable[[Path], Path]) -> None:
    for owner, name in _path_fields(cfg):
        value = getattr(owner, name)
        if value is not None:
            setattr(owner, name, fn(value))


class CohortConfig(_Section):
    """What the data is: where the images, labels and clinical data are, and how breasts are split."""

    work_dir: Path = Field(Path("mammofuse-work"), description="where the stages write their files")
    description: str = Field("", description="what this cohort is, in a sentence: the report states it")
    images: ImagesConfig = ImagesConfig()
    labels: LabelsConfig = LabelsConfig()
    clinical: ClinicalConfig = ClinicalConfig()
    split: SplitConfig = SplitConfig()

    @model_validator(mode="after")
    def _exam_date_given(self) -> CohortConfig:
        if self.images.exam_policy == "before_label_date" and not self.labels.date_column:
            raise ValueError(
                "images.exam_policy = 'before_label_date' needs labels.date_column (a date per breast)"
            )
        return self

    @model_validator(mode="after")
    def _label_is_not_a_feature(self) -> CohortConfig:
        features = set(self.clinical.numeric) | set(self.clinical.categorical)
        if self.labels.column in features:
            raise ValueError(
                f"the label column {self.labels.column!r} is also a clinical input ([clinical] numeric or "
                "categorical): the model would be given the answer (target leakage)"
            )
        return self

    def record(self, sections: tuple[str, ...] = COHORT_SECTIONS) -> dict[str, Any]:
        """The named cohort sections as plain data, paths relative to the work folder: what a work folder
        was built from, comparable after the whole tree is moved or copied."""
        work = self.work_dir
        copy = self.model_copy(deep=True)
        _map_paths(copy, lambda p: Path(os.path.relpath(p, work)))
        dumped = copy.model_dump(mode="json", exclude_none=True)
        return {name: dumped[name] for name in sections}


class ExperimentConfig(_Section):
    """What is done with the data: preprocessing, balancing and augmentation, the network, training."""

    preprocess: PreprocessConfig = PreprocessConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


class Config(CohortConfig, ExperimentConfig):
    """A study: the cohort's files and every setting of the pipeline."""

    @model_validator(mode="after")
    def _auxiliary_targets_are_clinical_columns(self) -> Config:
        columns = [*self.clinical.numeric, *self.clinical.categorical]
        for name, weight in self.model.auxiliary.items():
            if name not in columns:
                raise ValueError(
                    f"model.auxiliary: {name!r} is not a clinical column (clinical.numeric and "
                    f"clinical.categorical: {', '.join(columns) or 'none, clinical.use is false'})"
                )
            if not weight > 0:
                raise ValueError(f"model.auxiliary.{name}: the loss weight must be positive (found {weight})")
        return self

    def resolve_paths(self, base: Path) -> Config:
        """Return a copy whose relative paths are made absolute against `base`."""
        base = base.resolve()

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        out = self.model_copy(deep=True)
        _map_paths(out, fix)
        if out.model.pretrained not in ("none", "imagenet"):
            out.model.pretrained = str(fix(Path(out.model.pretrained)))
        return out

    @property
    def cache_dir(self) -> Path:
        return self.preprocess.cache_dir or self.work_dir / "cache"

    @property
    def cohort(self) -> CohortConfig:
        return CohortConfig.model_validate(self.model_dump(include={"work_dir", *COHORT_SECTIONS}))

    @property
    def experiment(self) -> ExperimentConfig:
        return ExperimentConfig.model_validate(self.model_dump(include=set(EXPERIMENT_SECTIONS)))


def _describe(errors: Any, model: type[BaseModel]) -> str:
    lines = []
    for err in errors:
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (allowed here: {', '.join(_allowed(model, err['loc'][:-1]))})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            found = err.get("input")
            shown = "" if isinstance(found, dict) else f" (found {found!r})"
            lines.append(f"{key or '(top level)'}: {msg}{shown}")
    return "\n".join(lines)


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration\n{_describe(exc.errors(), Config)}") from None


# The first line of a work folder's cohort.toml (runs.Work.record_cohort): a record, not a config to run.
COHORT_RECORD_HEADER = (
    "# mammofuse: the cohort settings this work folder was built from (written by ingest and split). Not a "
    "config: commands take the study's own config, which also holds its experiment settings."
)


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve a TOML config; raise ConfigError with a readable message."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    if text.startswith(COHORT_RECORD_HEADER):  # its experiment settings would silently be the defaults
        raise ConfigError(
            f"{path}: the work folder's record of its cohort settings, not a config; give the study's own "
            "config (the one ingest was given: it also holds the experiment settings, e.g. preprocess.size)"
        )
    return parse_config(data, str(path)).resolve_paths(path.parent)


def to_toml(config: Config) -> str:
    """The config as TOML (None values are left out: TOML has no null)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def settings_text(values: dict[str, Any]) -> str:
    """Settings ("section.field" -> value) for a person: "train.lr = 0.00118, data.balance = none"."""
    return ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in values.items())


def setting(config: Config, key: str) -> Any:
    """The value of "section.field" in `config`."""
    section, name = key.split(".", 1)
    return getattr(getattr(config, section), name)


def save_config(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, to_toml(config))
