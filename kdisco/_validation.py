"""Checks shared by every setting and policy, so each rule has one wording."""

from __future__ import annotations

import math
import os
from typing import TypeVar

from ._exceptions import ConfigurationError

P = TypeVar("P")

#: Past this a timeout is no bound at all, and ``socket.settimeout`` overflows on it.
MAX_SECONDS = 86400.0 * 365


def parse_timeout(value: object, *, where: str = "timeout") -> float:
    """A positive, finite number of seconds (a str is parsed, as env vars are)."""
    original = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigurationError(f"{where}={value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{where} must be a positive, finite number of seconds, not {original!r}"
        )
    if seconds > MAX_SECONDS:
        raise ConfigurationError(
            f"{where}={original!r} is over a year; use at most {MAX_SECONDS:g}"
        )
    return seconds


def check_non_negative(policy: object, *names: str) -> None:
    """Every named attribute of ``policy`` is a real number >= 0 (not a bool, not NaN)."""
    kind = type(policy).__name__
    for name in names:
        value = getattr(policy, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (value >= 0 and not math.isnan(value))
        ):
            raise ConfigurationError(f"{kind}.{name} must be a number >= 0, not {value!r}")


def as_policy(value: object, cls: type[P], *, where: str) -> P:
    """``True``/``False`` as ``cls(enabled=...)``, an instance as it is, else an error."""
    if isinstance(value, bool):
        made: P = cls(enabled=value)  # type: ignore[call-arg]
        return made
    if isinstance(value, cls):
        return value
    raise ConfigurationError(f"{where} must be a bool or a {cls.__name__}, not {value!r}")


def check_positive_int(policy: object, *names: str) -> None:
    """Every named attribute of ``policy`` is an int >= 1 (not a bool)."""
    kind = type(policy).__name__
    for name in names:
        value = getattr(policy, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{kind}.{name} must be an int >= 1, not {value!r}")


def read_text_file(path: str | os.PathLike[str], what: str) -> str | None:
    """The file's text, None when it does not exist; ConfigurationError naming the file
    (and ``what`` it is) when it cannot be read or is not UTF-8 text."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"{exc}"
        raise ConfigurationError(f"cannot read {what} {os.fspath(path)!r}: {reason}") from None


def parse_port_text(text: str, where: str) -> int:
    """A port number 1-65535 written in ASCII digits (``'²'`` and 5,000 digits are not).

    ``isdigit()`` alone accepts non-ASCII digits ('٨٠', '²'), which ``int()`` reads or
    chokes on."""
    if not (text.isascii() and text.isdigit()):
        raise ConfigurationError(f"{where}: port {text[:10]!r} is not a number")
    digits = text.lstrip("0") or "0"
    # Checked before int(), which refuses over 4300 digits with a bare ValueError.
    if len(digits) > 5 or not 1 <= int(digits) <= 65535:
        raise ConfigurationError(f"{where}: port {text[:10]} is outside 1-65535")
    return int(digits)
