"""Value types that verger.yml writes as short strings: durations, rates, addresses."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# The unit is optional so that a quoted or ${VAR}-expanded "30" reads as seconds.
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``250ms``, ``7d`` or a bare number."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {value!r}")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration: ``90s``, ``5m``, ``250ms``."""
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_rate(value: Any) -> float:
    """A fraction from ``1%``, ``0.5%`` or a bare fraction such as ``0.01``."""
    if isinstance(value, bool):
        raise ValueError("expected a rate such as 1% or 0.01")
    given = value
    if isinstance(value, str):
        # A quoted or ${VAR}-expanded number is a fraction, like the bare number.
        text = value.strip()
        percent = text.endswith("%")
        try:
            value = float(text.removesuffix("%")) / (100 if percent else 1)
        except ValueError:
            raise ValueError(f"expected a rate such as 1%, got {given!r}") from None
    if isinstance(value, int | float) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"expected a rate between 0% and 100%, got {given!r}")


def parse_listen(value: Any) -> str:
    """``HOST:PORT`` or a bare port (which listens on 127.0.0.1)."""
    given = value
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"127.0.0.1:{value}"
    if isinstance(value, str) and value.strip().isdigit():
        # listen: ${PORT} arrives as a string after expansion.
        value = f"127.0.0.1:{value.strip()}"
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8080")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8080, got {given!r}")
    return f"{host or '127.0.0.1'}:{int(port)}"


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(format_duration)
]
Rate = Annotated[float, BeforeValidator(parse_rate)]
Listen = Annotated[str, BeforeValidator(parse_listen)]
