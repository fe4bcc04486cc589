"""Experiment presets: small TOML files that differ from the defaults, applied on top of a cohort config.

A preset may say `extends = "other"` to start from another preset. A preset changes only the
experiment part of a config ([preprocess], [data], [model], [train]): what the data is (images,
labels, clinical data, the split) belongs to the cohort config alone.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mammofuse.config import EXPERIMENT_SECTIONS, Config, ConfigError, parse_config


def available() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__package__).iterdir()
        if p.name.endswith(".toml")
    )


def _text(name: str) -> str:
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return path.read_text(encoding="utf-8")
    if name in available():
        return resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    raise ConfigError(f"unknown preset {name!r} (available: {', '.join(available())}, or a .toml file)")


def _beside(parent: str | None, name: str) -> str | None:
    """The preset a preset file `name` extends: a relative .toml path is read from that file's folder (a
    study's presets kept together, used from anywhere), else as given (from the working folder, as before)."""
    if parent is None or Path(parent).suffix != ".toml" or Path(parent).is_absolute():
        return parent
    here = Path(name).parent / parent
    return str(here) if Path(name).suffix == ".toml" and here.is_file() else parent


def _read(name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in chain:
        raise ConfigError(
            f"preset {chain[0]!r}: 'extends' goes round in a loop ({' -> '.join([*chain, name])})"
        )
    try:
        data = tomllib.loads(_text(name))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {name}: not valid TOML ({exc})") from None
    parent = _beside(data.pop("extends", None), name)
    outside = sorted(set(data) - set(EXPERIMENT_SECTIONS))
    if outside:
        allowed = ", ".join(f"[{s}]" for s in EXPERIMENT_SECTIONS)
        raise ConfigError(
            f"preset {name}: sets {', '.join(outside)}, which a preset may not change (a preset changes only "
            f"{allowed}; the cohort's images, labels, clinical data and split belong to the cohort config)"
        )
    return merge(_read(parent, (*chain, name)), data) if parent else data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def apply_preset(cfg: Config, name: str) -> Config:
    """`cfg` with the preset's values on top, validated like any config."""
    merged = merge(cfg.model_dump(mode="json", exclude_none=True), _read(name))
    return parse_config(merged, f"preset {name}")
