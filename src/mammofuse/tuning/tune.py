"""`mammofuse tune`: an Optuna study over experiment settings, scored on validation data only.

Every trial trains on the work folder's training split and is scored by the validation AUC of the epoch
it keeps (the best, or the last: `train.checkpoint`); the test split is removed before anything is
trained, so no trial, and no choice made from the trials, ever sees it. Hopeless trials are stopped early
(Optuna's median pruner, fed every epoch's validation AUC through a Lightning callback). The study lives
in a database (default sqlite:///WORK/tune.db; any SQLAlchemy URL, e.g. PostgreSQL, lets several machines
share one study), so an interrupted `tune` goes on with the same study: a trial stopped before it
finished (Ctrl-C, a dead process) is run again with its settings from its last checkpoint, and each
trial's draw depends on the seed and its place in the study, so the resumed study is the uninterrupted
one. The best trial's settings are written as a preset (best.toml) for train, cv and compare.

The best validation AUC of many trials is optimistic: report a tuned setup by cross-validating
best.toml (`mammofuse cv`) or, better, by nested cross-validation (`mammofuse cv --tune`: `tune_fold`
runs a study inside each fold on its training folds alone).
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import optuna
import pandas as pd
import tomli_w
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mammofuse.config import (
    EXPERIMENT_SECTIONS,
    Config,
    ConfigError,
    ExperimentConfig,
    parse_config,
    settings_text,
)
from mammofuse.data.splits import TEST, VAL
from mammofuse.models.backbones import check_weights
from mammofuse.presets import merge
from mammofuse.problems import ModelError
from mammofuse.runs import Run, Work
from mammofuse.storage import in_use, locked, replace_text
from mammofuse.training.run import fit, kept_val_auc, preprocessed_for, resume_point, work_splits
from mammofuse.ui import console, counted


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Spec):
    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low:g} is above high {self.high:g}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low above 0 (found {self.low:g})")
        return self

    @property
    def ends(self) -> list[float]:
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


class Choice(_Spec):
    choices: list[str | int | float | bool] = Field(min_length=1)


Space = dict[str, Range | Choice]  # "section.field" -> what to draw


@dataclass(frozen=True)
class Tuning:
    """Nested cross-validation: each outer fold's settings tuned by `trials` trials drawn from `space`."""

    trials: int
    space: Space

    def __post_init__(self) -> None:
        preprocessing = [key for key in self.space if key.startswith("preprocess.")]
        if preprocessing:
            raise ConfigError(
                f"nested cross-validation cannot tune {', '.join(preprocessing)}: its folds share one "
                "preprocessing (their fold ensemble scores one preprocessed image); compare preprocessings "
                "with `mammofuse compare`, or tune them with `mammofuse tune`"
            )

    def describe(self) -> dict[str, Any]:
        """What a resumed nested cross-validation must match (JSON)."""
        return {"trials": self.trials, "space": {k: v.model_dump() for k, v in self.space.items()}}


def read_space(path: Path | None = None) -> Space:
    """The search space TOML (default: the packaged one); every key must be an experiment setting."""
    if path is None:
        text = resources.files(__package__).joinpath("space.toml").read_text(encoding="utf-8")
        where = "the default search space"
    else:
        if not path.is_file():
            raise ConfigError(f"{path}: search space file not found")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from None
    space: Space = {}
    for section, fields in data.items():
        if section not in EXPERIMENT_SECTIONS:
            raise ConfigError(
                f"{where}: [{section}] cannot be tuned (only {', '.join(EXPERIMENT_SECTIONS)} settings can)"
            )
        known = ExperimentConfig.model_fields[section].annotation.model_fields  # type: ignore[union-attr]
        for name, spec in fields.items():
            key = f"{section}.{name}"
            if name not in known:
                raise ConfigError(
                    f"{where}: {key} is not a setting (known in [{section}]: {', '.join(known)})"
                )
            try:
                space[key] = Choice.model_validate(spec) if "choices" in spec else Range.model_validate(spec)
            except ValidationError as exc:
                raise ConfigError(
                    f"{where}: {key}: {exc.errors()[0]['msg'].removeprefix('Value error, ')} (a range: "
                    "low, high; or choices)"
                ) from None
    return space


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """One draw from the space: {"section.field": value}."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, Choice):
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.integer:
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
    return params


def _nested(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def check_space(cfg: Config, space: Space, where: str) -> None:
    """Each value the space can draw (every choice, a range's ends), set alone on `cfg`, checked by its
    setting's own rules before any trial: a choice of 0 epochs stops here, not at its draw. The starting
    weights of every backbone and start the space can draw (or the preset's) are read (ImageNet's on an
    offline machine, a file of another network): a trial drawing one that cannot load would stop the study."""
    base = cfg.model_dump(mode="json", exclude_none=True)
    for key, spec in space.items():
        for value in spec.choices if isinstance(spec, Choice) else spec.ends:
            try:
                Config.model_validate(merge(base, _nested({key: value})))
            except ValidationError as exc:
                own = [e for e in exc.errors() if ".".join(map(str, e["loc"])) == key]
                if own:
                    message = own[0]["msg"].removeprefix("Value error, ")
                    raise ConfigError(f"{where}: {key} can draw {value!r}: {message}") from None
    drawn = {key: spec.choices for key, spec in space.items() if isinstance(spec, Choice)}
    backbones = drawn.get("model.backbone", [cfg.model.backbone])
    for backbone, start in itertools.product(
        backbones, drawn.get("model.pretrained", [cfg.model.pretrained])
    ):
        try:
            check_weights(str(backbone), str(start))
        except ModelError as exc:
            chosen = {"model.backbone", "model.pretrained"} & set(drawn)
            trial = "a trial can draw" if chosen else "every trial trains"
            raise ConfigError(
                f"{where}: {trial} model.backbone = {backbone!r} with model.pretrained = {start!r}: {exc}"
            ) from None


def with_params(cfg: Config, params: dict[str, Any]) -> Config:
    """`cfg` with a trial's settings, validated like any config."""
    merged = merge(cfg.model_dump(mode="json", exclude_none=True), _nested(params))
    return parse_config(merged, "search space draw")


class Pruning(L.Callback):
    """Reports each epoch's validation AUC to the trial; stops the trial when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_auc")
        if value is None or trainer.sanity_checking:
            return
        self.trial.report(float(value), trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"validation AUC {float(value):.3f} at epoch {trainer.current_epoch + 1}"
            )


RESUMES = "resumes"  # user attribute of a trial that finishes an interrupted one: that trial's number
INTERRUPTED = "interrupted"  # user attribute of a trial stopped by Ctrl-C
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def stands_for(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial whose settings and run folder a trial has: its own number, or the interrupted one's."""
    return int(trial.user_attrs.get(RESUMES, trial.number))


class TrialSeeded(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler, seeded for each trial from (seed, the trial's place in the study).

    One TPESampler(seed) draws a process's trials from one generator started at `seed`, so a study
    resumed by a second `tune` drew its first trials' settings again, and processes sharing a study drew
    the same settings side by side. Here a trial's draw depends on the seed, its place and the trials
    finished before it, whichever process makes it. A trial that finishes an interrupted one takes no
    place (it repeats that trial's settings): a study interrupted and resumed draws what an uninterrupted
    one draws."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        earlier = study.get_trials(deepcopy=False)
        place = sum(1 for t in earlier if t.number < trial.number and RESUMES not in t.user_attrs)
        seed = int(np.random.SeedSequence([self.seed, place]).generate_state(1)[0])
        self._tpe = optuna.samplers.TPESampler(seed=seed)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def open_study(storage: str, name: str, seed: int, where: str | None = None) -> optuna.Study:
    """Create the study or load it to go on; an unreachable storage is a clear ConfigError that names it as
    `where` (default: the --storage option that gave it)."""
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            load_if_exists=True,
            sampler=TrialSeeded(seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        )
    except Exception as exc:  # sqlalchemy: bad URL, unreachable server, missing driver, ...
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = where or f"--storage {storage}"
        raise ConfigError(f"{where}: cannot open the study there ({message})") from None


def trial_run(tune_dir: Path, trial: optuna.Trial | FrozenTrial) -> Run:
    return Run(tune_dir / f"trial-{stands_for(trial):03d}")


def resume_interrupted(study: optuna.Study, tune_dir: Path, shared_folder: bool = False) -> list[int]:
    """Queue again, with its own settings, every trial stopped before it finished: by Ctrl-C, or by the
    death of its process (kill -9, a power cut: left RUNNING, its run folder here no longer held; a
    RUNNING trial whose folder is not here belongs to another machine and is left to it). The retry
    trains on in that trial's run folder from its last checkpoint. Returns the trials queued again.

    `shared_folder`: every process of the study works in `tune_dir` (its database is in the work
    folder), and the caller holds the folder's lock, under which trials are asked and their folders
    made: a RUNNING trial without a folder then died in between. It trained nothing: it is failed and
    a new trial takes its place."""
    trials = study.get_trials(deepcopy=False)
    if shared_folder:
        for t in trials:
            if t.state == TrialState.RUNNING and not trial_run(tune_dir, t).dir.is_dir():
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        trials = study.get_trials(deepcopy=False)
    dead = [
        t.number
        for t in trials
        if t.state == TrialState.RUNNING
        and trial_run(tune_dir, t).dir.is_dir()
        and not in_use(trial_run(tune_dir, t).dir)
    ]
    for number in dead:
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    stopped = {
        stands_for(t)
        for t in trials
        if t.number in dead or (t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED))
    }
    going = {stands_for(t) for t in trials if t.state in (*FINISHED, TrialState.WAITING)}
    going |= {stands_for(t) for t in trials if t.state == TrialState.RUNNING and t.number not in dead}
    queued = sorted(stopped - going)
    for number in queued:
        study.enqueue_trial(trials[number].params, user_attrs={RESUMES: number})
    return queued


def replay(trial: optuna.Trial, run: Run) -> None:
    """Report to a retry the epochs its interrupted trial had finished (the run resumes after them), and
    prune it where the pruner would have."""
    _, done = resume_point(run)
    epochs = run.read_epochs()
    if not done or epochs is None:
        return
    aucs = [float(auc) for auc in epochs["val_auc"][:done]]
    for epoch, auc in enumerate(aucs):
        trial.report(auc, epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(f"validation AUC {aucs[-1]:.3f} at epoch {done}")


def run_tune(
    cfg: Config, tune_dir: Path, preset: str | None, trials: int, storage: str | None, space: Space
) -> tuple[optuna.Study, Path]:
    """`mammofuse tune`: a study on the work folder's training and validation split (its test split is
    removed first); run it until `trials` have finished; write best.toml; return the study."""
    splits = work_splits(cfg)
    work = Work(cfg.work_dir)
    if storage is None:
        where = f"{work.tune_db} (the work folder's studies; move it aside to start them afresh)"
        study = open_study(f"sqlite:///{work.tune_db}", tune_dir.name, cfg.train.seed, where)
    else:
        study = open_study(storage, tune_dir.name, cfg.train.seed)
    table = None  # the cohort preprocessed once for every trial, unless the trials change preprocessing
    if not any(key.startswith("preprocess.") for key in space):
        tune_dir.mkdir(parents=True, exist_ok=True)
        table = preprocessed_for(cfg, work.read_manifest()[0], Run(tune_dir))
    optimize(study, cfg, splits, table, tune_dir, trials, space, shared_folder=storage is None)
    return study, write_best(study, tune_dir, preset)


def tune_fold(cfg: Config, fold: Run, splits: pd.DataFrame, table: pd.DataFrame, tuning: Tuning) -> Config:
    """Nested cross-validation: the settings of one outer fold, tuned on its training folds alone (a
    study of its own in the fold's tune/ folder); the fold's held-out breasts are removed first, so the
    choice never sees the breasts it is scored on. Returns `cfg` with the best trial's settings."""
    tune_dir = fold.study
    tune_dir.mkdir(parents=True, exist_ok=True)
    database = tune_dir / "tune.db"
    where = f"{database} (this fold's study; move it aside to tune the fold afresh)"
    study = open_study(f"sqlite:///{database}", "tune", cfg.train.seed, where)
    optimize(study, cfg, splits, table, tune_dir, tuning.trials, tuning.space, shared_folder=True)
    write_best(study, tune_dir, None)
    best = study.best_trial
    console.print(
        f"chosen for this fold: trial {best.number} (validation AUC {best.value:.3f}): "
        + settings_text(best.params)
    )
    return with_params(cfg, best.params)


def optimize(
    study: optuna.Study,
    cfg: Config,
    splits: pd.DataFrame,
    table: pd.DataFrame | None,
    tune_dir: Path,
    trials: int,
    space: Space,
    shared_folder: bool = False,
) -> None:
    """Run trials on the training and validation breasts of `splits` (its test breasts are removed
    before anything is trained) until `trials` have finished (complete or pruned). `shared_folder`: as
    for `resume_interrupted`.

    Several processes may work on one study: each trial holds its run folder, and a trial is started
    (and interrupted ones found and queued again) under the tune folder's lock."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inner = splits[splits["split"] != TEST].reset_index(drop=True)  # the test split is never touched
    done = [t for t in study.trials if t.state in FINISHED]
    if done:
        console.print(f"study {study.study_name}: {counted(len(done), 'trial')} finished before, going on")

    def objective(trial: optuna.Trial, run: Run) -> float:
        params = suggest(trial, space)  # a retry is given its interrupted trial's settings
        again = f" (trial {stands_for(trial)} goes on)" if RESUMES in trial.user_attrs else ""
        console.rule(f"trial {trial.number}{again}")
        console.print(settings_text(params))  # whole, on its own line: a rule cuts a long title to "…"
        replay(trial, run)
        trial_cfg = with_params(cfg, params)
        fit(trial_cfg, run, inner, table, callbacks=[Pruning(trial)])
        epochs = run.read_epochs()
        return kept_val_auc(epochs, trial_cfg.train.checkpoint) if epochs is not None else 0.5

    while True:
        with ExitStack() as held:
            with locked(tune_dir, "tune", on_wait=lambda holder: None):
                for number in resume_interrupted(study, tune_dir, shared_folder):
                    console.print(
                        f"trial {number} was stopped before it finished: it goes on from its last checkpoint"
                    )
                now = study.get_trials(deepcopy=False)
                started = {stands_for(t) for t in now if t.state in (*FINISHED, TrialState.RUNNING)}
                if len(started) >= trials and not any(t.state == TrialState.WAITING for t in now):
                    break
                trial = study.ask()
                run = trial_run(tune_dir, trial)
                held.enter_context(locked(run.dir, f"tune trial {trial.number}"))
            try:
                study.tell(trial, objective(trial, run))
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except KeyboardInterrupt:
                trial.set_user_attr(INTERRUPTED, True)
                study.tell(trial, state=TrialState.FAIL)
                raise
            except Exception:
                study.tell(trial, state=TrialState.FAIL)
                raise


def clinical_val_auc(study: optuna.Study, tune_dir: Path) -> float | None:
    """The clinical-only regression (fitted on the training breasts) on the best trial's validation breasts:
    what the images must beat on the breasts that chose the settings. One fit, nothing chosen on them, so
    not optimistic as the best trial's AUC is. None where the trial's folder is elsewhere (a shared
    --storage) or the run uses no clinical data."""
    from mammofuse.evaluation.evaluate import clinical_baseline
    from mammofuse.evaluation.metrics import auc
    from mammofuse.evaluation.result import OperatingPoint

    run = trial_run(tune_dir, study.best_trial)
    if not (run.data.is_file() and run.encoder.is_file()):
        return None
    data = run.read_data()
    fitted = clinical_baseline(run.read_encoder(), data, run.read_config().train.seed, OperatingPoint())
    if fitted is None:
        return None
    return auc(data.loc[data["split"] == VAL, "label"].to_numpy(), fitted[1][VAL])


def write_best(study: optuna.Study, tune_dir: Path, preset: str | None) -> Path:
    """best.toml: the preset tuned, with the best trial's settings on top."""
    best = study.best_trial
    data: dict[str, Any] = {}
    if preset:
        data["extends"] = str(Path(preset).resolve()) if Path(preset).suffix == ".toml" else preset
    data.update(_nested(best.params))
    header = (
        f"# mammofuse tune: best of {finished_trials(study)} finished trials of study {study.study_name!r} "
        f"(trial {best.number}, validation AUC {best.value:.3f}; optimistic: cross-validate it before "
        "reporting)\n"
    )
    path = tune_dir / "best.toml"
    tune_dir.mkdir(parents=True, exist_ok=True)
    replace_text(path, header + tomli_w.dumps(data))
    return path


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, value, state, the trial it goes on with (a retry), its settings."""
    table = study.trials_dataframe(attrs=("number", "value", "state", "params"))
    table.insert(3, "goes on with", [t.user_attrs.get(RESUMES, "") for t in study.trials])
    return table.rename(columns=lambda name: name.removeprefix("params_"))


def finished_trials(study: optuna.Study) -> int:
    return sum(t.state in FINISHED for t in study.trials)
