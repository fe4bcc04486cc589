"""Experiment presets: small TOML files that differ from the defaults, applied on top of a cohort config.

A preset may say `extends = "other"` to start from another preset.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mammofuse.config import Config, ConfigError, parse_config


def available() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml")
        for p in resources.files(__package__).iterdir()
        if p.name.endswith(".toml")
    )


def _read(name: str) -> dict[str, Any]:
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text(encoding="utf-8")
    elif name in available():
        text = resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    else:
        raise ConfigError(f"unknown preset {name!r} (available: {', '.join(available())}, or a .toml file)")
    data = tomllib.loads(text)
    parent = data.pop("extends", None)
    return _merge(_read(parent), data) if parent else data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def apply_preset(cfg: Config, name: str) -> Config:
    """`cfg` with the preset's values on top, validated like any config."""
    merged = _merge(cfg.model_dump(mode="json", exclude_none=True), _read(name))
    return parse_config(merged, f"preset {name}")
