"""Config helpers in the big_vision style: `get_config(arg)` files parsed with `parse_arg`.

A config file under `configs/` defines `get_config(arg=None)`; `arg` is the text after the colon
in `--config configs/tiny.py:frames=9,height=48`. Configs are loaded locked, so an override of a
field that does not exist (`--config.modle.depth=4`) fails instead of being silently ignored.
"""

import importlib.util
import pathlib
import types

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses `"k1=v1,k2=v2,flag"` into a ConfigDict typed like `defaults`.

    A bare word sets a boolean default to True. Unknown keys raise, so a typo in a variant
    string fails loudly.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    if not arg:
        return result
    for item in arg.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        if not sep:
            if not isinstance(defaults[key], bool):
                raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
            result[key] = True
            continue
        result[key] = _cast(value.strip(), defaults[key], key)
    return result


def _cast(value: str, default, key: str):
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"config argument {key!r} expects a boolean, got {value!r}")
        return value.lower() in ("true", "1")
    if default is None:
        return value
    try:
        return type(default)(value)
    except ValueError as e:
        raise ValueError(
            f"config argument {key!r} expects {type(default).__name__}, got {value!r}"
        ) from e


def load_sibling(config_file: str, name: str) -> types.ModuleType:
    """Imports `name`.py from the directory of `config_file` (configs are files, not a package)."""
    path = pathlib.Path(config_file).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"sora_jax_configs.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(path_and_arg: str) -> ml_collections.ConfigDict:
    """Loads `path/to/config.py[:arg]` outside absl flags (tests, notebooks), locked."""
    path, _, arg = path_and_arg.partition(":")
    spec = importlib.util.spec_from_file_location("sora_jax_config", path)
    if spec is None or not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    config.lock()
    return config


def with_later_fields(section, later_fields: dict) -> dict:
    """A config section (ConfigDict or a saved run's dict) as a dict, with each field of
    `later_fields` that it lacks (one added after the run was saved) at the value such runs
    used: so an old run and a new config that agree compare equal."""
    if isinstance(section, ml_collections.ConfigDict):
        section = section.to_dict()
    return {**later_fields, **section}
