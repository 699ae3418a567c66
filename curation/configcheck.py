"""Configuration files and keys: the YAML file read with one-line errors, and unknown keys an error with a
near-match suggestion, never silently ignored: the file's keys checked against the settings models (a
list of sources by each item's `kind`)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from .errors import ConfigError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML file's mapping of keys; ConfigError (one line) when it is missing, unreadable, not YAML
    or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"config file {p} is not a YAML text file ({type(e).__name__})") from e
    except OSError as e:
        raise ConfigError(f"config file {p} cannot be read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, not {type(loaded).__name__}")
    return loaded


def check_keys(data: Any, model: type[BaseModel], where: str = "") -> None:
    """Raise ConfigError for the first key of `data` (nested sections and lists of sources included)
    that `model` does not know, naming its path and the nearest known key."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{where}{near[0]}'?" if near else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown config key '{where}{key}'{hint}")
        models = _models_in(fields[key].annotation)
        items = value if isinstance(value, list) else [value]
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not models:
                continue
            model = _pick_model(models, item)
            label = f"{where}{key}[{n}]." if isinstance(value, list) else f"{where}{key}."
            check_keys(item, model, label)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _models_in(a)]


def _pick_model(models: list[type[BaseModel]], item: dict) -> type[BaseModel]:
    """For a union of sections (sources), the one whose `kind` matches the item."""
    if len(models) == 1:
        return models[0]
    kind = item.get("kind", "folder")
    for m in models:
        if "kind" in m.model_fields and kind in get_args(m.model_fields["kind"].annotation):
            return m
    kinds = [get_args(m.model_fields["kind"].annotation)[0] for m in models if "kind" in m.model_fields]
    raise ConfigError(f"unknown source kind {kind!r}; use one of {', '.join(kinds)}")
