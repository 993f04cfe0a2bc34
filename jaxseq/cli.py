"""Command-line parsing for experiment configs: a thin wrapper over tyro.

Every experiment ends with ``main(jaxseq.cli.parse(Config))``, where ``Config`` is a
frozen dataclass. On the command line::

    python -m experiments.copy_memory --hidden_size=64 --learning_rate=3e-4
    python -m experiments.copy_memory --config=runs/copy_memory/config.json --steps=10

Values are set in three layers, each overriding the one before: the dataclass
defaults, then the keys of ``--config=FILE.json``, then the other flags.
"""

import dataclasses
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import tyro

ConfigT = TypeVar("ConfigT")

_CONFIG_FLAG = "--config"
_CONFIG_FILE_NAME = "config.json"


def parse(config_cls: type[ConfigT], argv: Sequence[str] | None = None) -> ConfigT:
    """Builds a ``config_cls`` instance from ``--key=value`` command-line flags.

    Field names keep their underscores (``--hidden_size=64``; tyro's hyphenated
    ``--hidden-size`` also works). Each value is converted to the field's type.
    Booleans take an explicit value, ``--flag=True`` or ``--flag=False``, so every
    flag has the same ``--key=value`` form. An unknown flag or a value that does not
    convert prints a message naming the flag and exits with status 2.

    ``--config=FILE.json`` (or ``--config FILE.json``) loads a JSON object whose keys
    replace the dataclass defaults; the other flags then override those, wherever
    ``--config`` stands among them.

    Args:
      config_cls: a dataclass type (frozen, by house style) with a default for
        every field. It must not have a field named ``config``.
      argv: the arguments, without the program name. Defaults to ``sys.argv[1:]``.

    Returns:
      The resolved ``config_cls`` instance.

    Raises:
      ValueError: if the JSON file has a key that is not a field of ``config_cls``,
        or if ``config_cls`` has a field named ``config``.
      TypeError: if a JSON value does not fit its field's type.
      SystemExit: (status 2) on an unknown flag, a value that does not convert, or a
        ``--config`` flag without a path.
    """
    fields = _fields(config_cls)
    if "config" in fields:
        raise ValueError(
            f"{config_cls.__name__} has a field named 'config', which jaxseq.cli.parse "
            "reserves for --config=FILE.json; rename the field."
        )
    args = list(sys.argv[1:] if argv is None else argv)
    config_path, args = _pop_config_flag(args)
    default = config_cls()
    if config_path is not None:
        default = dataclasses.replace(default, **_load_overrides(config_cls, config_path))
    return tyro.cli(
        config_cls,
        args=args,
        default=default,
        use_underscores=True,
        config=(tyro.conf.FlagConversionOff,),
        description=_description(config_cls),
    )


def save_config(config: Any, out_dir: str | os.PathLike[str]) -> Path:
    """Writes a dataclass config to ``out_dir/config.json``, creating ``out_dir``.

    The file can be passed back as ``--config=out_dir/config.json`` to rerun with the
    same settings.

    Args:
      config: a dataclass instance whose fields are JSON-serialisable (tuples are
        written as lists and read back as tuples by ``parse``).
      out_dir: the run directory; created with its parents if missing.

    Returns:
      The path of the written file.
    """
    path = Path(out_dir) / _CONFIG_FILE_NAME
    text = json.dumps(dataclasses.asdict(config), indent=2) + "\n"
    if jax.process_index() == 0:  # one writer in a multi-host run
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def _fields(config_cls: type) -> dict[str, dataclasses.Field]:
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass type, got {config_cls!r}")
    return {field.name: field for field in dataclasses.fields(config_cls)}


def _pop_config_flag(args: list[str]) -> tuple[str | None, list[str]]:
    """Removes ``--config=PATH`` / ``--config PATH`` from ``args`` and returns PATH."""
    path = None
    rest = []
    items = iter(args)
    for arg in items:
        if arg == _CONFIG_FLAG:
            path = next(items, None)
            if path is None or path.startswith("--"):
                _exit_with_error(f"{_CONFIG_FLAG} expects a path to a JSON file")
        elif arg.startswith(_CONFIG_FLAG + "="):
            path = arg.removeprefix(_CONFIG_FLAG + "=")
        else:
            rest.append(arg)
    return path, rest


def _load_overrides(config_cls: type, path: str) -> dict[str, Any]:
    """Reads a JSON object of field overrides and checks its keys and value types."""
    with open(path) as f:
        overrides = json.load(f)
    if not isinstance(overrides, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(overrides).__name__}")
    fields = _fields(config_cls)
    hints = typing.get_type_hints(config_cls)
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(
                f"{path}: unknown key {key!r} for {config_cls.__name__}; "
                f"valid keys are {sorted(fields)}"
            )
        overrides[key] = _coerce(value, hints[key], key)
    return overrides


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Converts a JSON value to ``annotation`` where JSON cannot say it (float, tuple).

    Plain ``bool``/``int``/``float``/``str`` fields are type-checked; other
    annotations are passed through unchanged.
    """
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (bool, int, float, str):
        # bool is a subclass of int, so `true` must not pass for an int field.
        if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
            raise TypeError(
                f"config key {key!r} expects {annotation.__name__}, "
                f"got {type(value).__name__} {value!r}"
            )
    return value


def _description(config_cls: type) -> str:
    doc = config_cls.__doc__ or ""
    if doc.startswith(config_cls.__name__ + "("):  # dataclass's generated signature
        doc = ""
    note = (
        f"{_CONFIG_FLAG}=FILE.json loads a JSON object whose keys replace the defaults; "
        "the other flags override it."
    )
    return f"{doc.strip()}\n\n{note}".strip()


def _exit_with_error(message: str) -> typing.NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
