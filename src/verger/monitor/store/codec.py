"""How a block of samples is packed: delta-of-delta timestamps, exact decimal values.

Timestamps are whole milliseconds; a scrape every 10 s makes their second
differences almost all zero. Values that are exact decimals with at most six
places (counters, percentages, bytes) are stored as scaled integers and
delta-encoded; any other float is XOR-ed with its predecessor and
byte-shuffled. Both are zig-zag varints, then zlib: a regular series costs
well under two bytes a sample, and decoding gives back the very same floats.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence

_SHUFFLED = 255
_MAX_PLACES = 6


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63) if -(1 << 63) <= n < (1 << 63) else _too_big(n)


def _too_big(n: int) -> int:
    raise OverflowError(f"{n} does not fit in 64 bits")


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _varints(numbers: Sequence[int], out: bytearray) -> None:
    for n in numbers:
        n = _zigzag(n)
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)


def _read_varints(data: bytes, pos: int, count: int) -> tuple[list[int], int]:
    numbers: list[int] = []
    for _ in range(count):
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        numbers.append(_unzigzag(result))
    return numbers, pos


def _deltas(numbers: Sequence[int], order: int) -> list[int]:
    out = list(numbers)
    for _ in range(order):
        out = out[:1] + [b - a for a, b in itertools.pairwise(out)]
    return out


def _undeltas(numbers: list[int], order: int) -> list[int]:
    out = numbers
    for _ in range(order):
        total = 0
        summed = []
        for n in out:
            total += n
            summed.append(total)
        out = summed
    return out


def _places(values: Sequence[float]) -> int | None:
    """The fewest decimal places that give every value back exactly, if six or fewer."""
    for places in range(_MAX_PLACES + 1):
        scale = 10**places
        try:
            if all(round(v * scale) / scale == v for v in values):
                return places
        except (OverflowError, ValueError):
            return None
    return None


def _pack_values(values: Sequence[float], out: bytearray) -> None:
    places = _places(values) if all(math.isfinite(v) for v in values) else None
    if places is not None:
        scale = 10**places
        scaled = [round(v * scale) for v in values]
        if all(abs(n) < (1 << 62) for n in scaled):
            out.append(places)
            _varints(_deltas(scaled, 1), out)
            return
    out.append(_SHUFFLED)
    bits = struct.unpack(f"<{len(values)}q", struct.pack(f"<{len(values)}d", *values))
    xored = [bits[0], *(a ^ b for a, b in itertools.pairwise(bits))]
    raw = struct.pack(f"<{len(xored)}q", *xored)
    # Bytes of equal weight side by side: runs of equal exponents compress well.
    out += b"".join(raw[i::8] for i in range(8))


def _unpack_values(data: bytes, pos: int, count: int) -> tuple[list[float], int]:
    places = data[pos]
    pos += 1
    if places != _SHUFFLED:
        scaled, pos = _read_varints(data, pos, count)
        scale = 10**places
        return [n / scale for n in _undeltas(scaled, 1)], pos
    size = count * 8
    raw = bytearray(size)
    for i in range(8):
        raw[i::8] = data[pos + i * count : pos + (i + 1) * count]
    xored = struct.unpack(f"<{count}q", raw)
    bits: list[int] = []
    previous = 0
    for n in xored:
        previous = n if not bits else previous ^ n
        bits.append(previous)
    return list(
        struct.unpack(f"<{count}d", struct.pack(f"<{count}q", *bits))
    ), pos + size


def encode(times: Sequence[float], columns: Sequence[Sequence[float]]) -> bytes:
    """One compressed block: timestamps (seconds) and one or more value columns."""
    out = bytearray(struct.pack("<IB", len(times), len(columns)))
    _varints(_deltas([round(t * 1000) for t in times], 2), out)
    for values in columns:
        _pack_values(values, out)
    return zlib.compress(bytes(out), 6)


def decode(blob: bytes) -> tuple[list[float], list[list[float]]]:
    """The timestamps and value columns of a block made by ``encode``."""
    data = zlib.decompress(blob)
    count, width = struct.unpack_from("<IB", data)
    millis, pos = _read_varints(data, 5, count)
    times = [t / 1000 for t in _undeltas(millis, 2)]
    columns = []
    for _ in range(width):
        values, pos = _unpack_values(data, pos, count)
        columns.append(values)
    return times, columns
