"""`mammofuse tune`: an Optuna study over experiment settings, scored on validation data only.

Every trial trains on the work folder's training split and is scored by its best validation AUC; the
test split is removed before anything is trained, so no trial, and no choice made from the trials, ever
sees it. Hopeless trials are stopped early (Optuna's median pruner, fed every epoch's validation AUC
through a Lightning callback). The study lives in a database (default sqlite:///WORK/tune.db; any
SQLAlchemy URL, e.g. PostgreSQL, lets several machines share one study), so an interrupted `tune` goes
on with the same study. The best trial's settings are written as a preset (best.toml) for train, cv
and compare.

The best validation AUC of many trials is optimistic: report a tuned setup by cross-validating
best.toml (`mammofuse cv`) or, better, on data the tuning never saw.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import pandas as pd
import tomli_w
from pydantic import BaseModel, ConfigDict, ValidationError

from mammofuse.config import EXPERIMENT_SECTIONS, Config, ConfigError, ExperimentConfig, parse_config
from mammofuse.data.splits import TEST
from mammofuse.presets import merge
from mammofuse.runs import Run, Work
from mammofuse.training.run import fit, preprocessed_for, work_splits
from mammofuse.ui import console


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Spec):
    low: float
    high: float
    log: bool = False
    integer: bool = False


class Choice(_Spec):
    choices: list[str | int | float | bool]


Space = dict[str, Range | Choice]  # "section.field" -> what to draw


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
                    f"{where}: {key}: {exc.errors()[0]['msg']} (a range: low, high; or choices)"
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


def open_study(storage: str, name: str, seed: int) -> optuna.Study:
    """Create the study or load it to go on; an unreachable storage is a clear ConfigError."""
    try:
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        )
    except Exception as exc:  # sqlalchemy: bad URL, unreachable server, missing driver, ...
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {storage}: cannot open the study there ({message})") from None


def run_tune(
    cfg: Config, tune_dir: Path, preset: str | None, trials: int, storage: str | None, space: Space
) -> tuple[optuna.Study, Path]:
    """Run trials until `trials` have finished (complete or pruned); write best.toml; return the study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    splits = work_splits(cfg)
    inner = splits[splits["split"] != TEST].reset_index(drop=True)  # the test split is never touched
    work = Work(cfg.work_dir)
    study = open_study(storage or f"sqlite:///{work.tune_db}", tune_dir.name, cfg.train.seed)
    done = [
        t
        for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    if done:
        console.print(f"study {study.study_name}: {len(done)} trials finished before, going on")
    table = None  # the cohort preprocessed once for every trial, unless the trials change preprocessing
    if not any(key.startswith("preprocess.") for key in space):
        tune_dir.mkdir(parents=True, exist_ok=True)
        table = preprocessed_for(cfg, work.read_manifest()[0], Run(tune_dir))

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        console.rule(f"trial {trial.number}: " + ", ".join(f"{k} = {_show(v)}" for k, v in params.items()))
        run = Run(tune_dir / f"trial-{trial.number:03d}")
        fit(with_params(cfg, params), run, inner, table, callbacks=[Pruning(trial)])
        epochs = run.read_epochs()
        return float(epochs["val_auc"].max()) if epochs is not None else 0.5

    study.optimize(objective, n_trials=max(0, trials - len(done)), catch=())
    best = write_best(study, tune_dir, preset)
    return study, best


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_best(study: optuna.Study, tune_dir: Path, preset: str | None) -> Path:
    """best.toml: the preset tuned, with the best trial's settings on top."""
    best = study.best_trial
    data: dict[str, Any] = {}
    if preset:
        data["extends"] = str(Path(preset).resolve()) if Path(preset).suffix == ".toml" else preset
    data.update(_nested(best.params))
    header = (
        f"# mammofuse tune: best of {len(study.trials)} trials of study {study.study_name!r} (trial "
        f"{best.number}, validation AUC {best.value:.3f}; optimistic: cross-validate it before reporting)\n"
    )
    path = tune_dir / "best.toml"
    tune_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(header + tomli_w.dumps(data), encoding="utf-8")
    return path


def trials_table(study: optuna.Study) -> pd.DataFrame:
    return study.trials_dataframe(attrs=("number", "value", "state", "params"))
