"""Command-line flags that can also come from an environment variable.

    add(p, "--debounce", env="HEADROOM_DEBOUNCE_SECONDS", default=0.5, type=seconds,
        help="seconds of quiet ...")

The help text ends with "(env NAME, default VALUE)". A value from the environment is
converted only when the parser runs and the flag is not on the command line (argparse
converts string defaults lazily), so a bad value never breaks `headroom --version` and
is reported as a usage error naming the variable, never as a traceback:

    headroom operator: error: argument --debounce: HEADROOM_DEBOUNCE_SECONDS='abc': not a number
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from headroom.logs import LOG_FORMATS, LOG_LEVELS

TRUE = frozenset({"1", "true", "yes", "y", "on"})
FALSE = frozenset({"0", "false", "no", "n", "off", ""})


class EnvValue(str):
    """A default taken from the environment: remembers the variable's name so that the
    converter can say where a bad value came from."""

    env: str

    def __new__(cls, value: str, env: str) -> EnvValue:
        obj = super().__new__(cls, value)
        obj.env = env
        return obj


def boolean(text: str) -> bool:
    v = text.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise ValueError("not a boolean (true/false, yes/no, on/off, 1/0)")


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


def non_negative(text: str) -> float:
    v = number(text)
    if v < 0:
        raise ValueError("must be >= 0")
    return v


def port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise ValueError("not an integer port") from None
    if not -1 <= v <= 65535:
        raise ValueError("not a port (0 disables, -1 picks any free port)")
    return v


def _converter(convert: Callable[[str], Any], choices: Sequence[str] | None,
               lower: bool) -> Callable[[str], Any]:
    def conv(text: str) -> Any:
        source = f"{text.env}={str(text)!r}" if isinstance(text, EnvValue) else repr(str(text))
        value = text.strip().lower() if lower else str(text)
        try:
            out = convert(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{source}: {e}") from None
        if choices is not None and out not in choices:
            raise argparse.ArgumentTypeError(
                f"{source}: not one of {', '.join(choices)}")
        return out
    conv.__name__ = getattr(convert, "__name__", "value")
    return conv


class _Switch(argparse.Action):
    """--flag / --no-flag, whose default may come from the environment as a string."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        opts = list(option_strings)
        for o in option_strings:
            if o.startswith("--"):
                opts.append("--no-" + o[2:])
        super().__init__(opts, dest, nargs=0, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, not (option_string or "").startswith("--no-"))

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def add(p: argparse.ArgumentParser, *flags: str, env: str, default: Any,
        type: Callable[[str], Any] = str, help: str, choices: Sequence[str] | None = None,
        lower: bool = False, show_default: bool = True, **kw: Any) -> argparse.Action:
    """One flag backed by the environment variable `env`."""
    raw = os.environ.get(env)
    dflt: Any = EnvValue(raw, env) if raw is not None else default
    suffix = f"env {env}"
    if show_default:
        shown = ("unset" if default in (None, "") else
                 str(default).lower() if isinstance(default, bool) else str(default))
        suffix += f", default {shown}"
    text = f"{help} ({suffix})".replace("%", "%%")
    if type is boolean:
        return p.add_argument(*flags, action=_Switch, type=_converter(boolean, None, False),
                              default=dflt if raw is not None else bool(default), help=text,
                              **kw)
    if choices is not None:
        kw["metavar"] = kw.get("metavar") or "{" + ",".join(choices) + "}"
    # choices are checked by the converter, for command-line and environment values alike
    return p.add_argument(*flags, type=_converter(type, choices, lower), default=dflt,
                          help=text, **kw)


def add_logging_flags(p: argparse.ArgumentParser) -> None:
    """--log-level and --log-format, the same for every command."""
    add(p, "--log-level", env="HEADROOM_LOG_LEVEL", default="info", lower=True,
        choices=LOG_LEVELS, help="log level")
    add(p, "--log-format", env="HEADROOM_LOG_FORMAT", default="json", lower=True,
        choices=LOG_FORMATS, help="json: one object per line, message under msg; text: "
                                  "one readable line per event")
