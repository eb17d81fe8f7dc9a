"""A record encoder compiled from a flat Avro schema (the producer's hot path).

Supports records whose fields are ``string``, ``long``, ``int``, ``double``,
``float`` and ``boolean`` (all the checked-in contracts). Other schemas return
None from :func:`compile_writer` and use fastavro. The output is byte-for-byte
what fastavro writes (checked by property tests).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["compile_writer"]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


_SMALL = tuple(bytes((z,)) for z in range(128))


def _varint_fast(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    if z < 0x80:
        return _SMALL[z]
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long(lo: int, hi: int) -> Callable[[Any], bytes]:
    def write(v: Any) -> bytes:
        if type(v) is not int and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError(f"expected int, got {type(v).__name__} {v!r}")
        if not lo <= v <= hi:
            raise ValueError(f"{v} does not fit the Avro type")
        return _varint_fast(v)

    return write


def _string(v: Any) -> bytes:
    if type(v) is not str:
        raise TypeError(f"expected str, got {type(v).__name__} {v!r}")
    data = v.encode()
    return _varint_fast(len(data)) + data


def _double(v: Any) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected float, got {type(v).__name__} {v!r}")
    return _pack_double(v)


def _float(v: Any) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise TypeError(f"expected float, got {type(v).__name__} {v!r}")
    if math.isfinite(v) and abs(v) > 3.4028234663852886e38:
        raise ValueError(f"{v} does not fit an Avro float")
    return _pack_float(v)


def _boolean(v: Any) -> bytes:
    if type(v) is not bool:
        raise TypeError(f"expected bool, got {type(v).__name__} {v!r}")
    return b"\x01" if v else b"\x00"


_WRITERS: dict[str, Callable[[Any], bytes]] = {
    "long": _long(_LONG_MIN, _LONG_MAX),
    "int": _long(_INT_MIN, _INT_MAX),
    "string": _string,
    "double": _double,
    "float": _float,
    "boolean": _boolean,
}


def _check_long(name: str, lo: int, hi: int, v: Any) -> None:
    if type(v) is not int and (isinstance(v, bool) or not isinstance(v, int)):
        raise TypeError(f"{name}: expected int, got {type(v).__name__} {v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name}: {v} does not fit the Avro type")


def compile_writer(parsed: Any) -> Callable[[Mapping[str, Any]], bytes] | None:
    """An encoder for records of ``parsed`` (a fastavro-parsed schema), or None.

    The encoder is Python source generated from the schema (one straight-line
    function per record type, no per-field calls for strings and longs). It raises
    ``KeyError`` for a missing field (without default), ``TypeError``/``ValueError``
    for a value that does not fit.
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    lines = ["def encode(r):", "    parts = []"]
    scope: dict[str, Any] = {"_v": _varint_fast, "_check_long": _check_long, "_W": _WRITERS}
    for i, field in enumerate(parsed["fields"]):
        ftype = field["type"]
        if isinstance(ftype, dict):
            ftype = ftype.get("type")
        if not isinstance(ftype, str) or ftype not in _WRITERS:
            return None
        name = field["name"]
        if "default" in field:
            scope[f"_d{i}"] = _WRITERS[ftype](field["default"])
            lines.append(f"    v = r.get({name!r}, _d{i})")
            lines.append(f"    if v is _d{i}:")
            lines.append(f"        parts.append(_d{i})")
            lines.append("    else:")
            indent = "        "
        else:
            lines.append(f"    v = r[{name!r}]")
            indent = "    "
        if ftype == "string":
            lines += [
                f"{indent}if type(v) is not str:",
                f"{indent}    raise TypeError(f'{name}: expected str, got {{v!r}}')",
                f"{indent}v = v.encode()",
                f"{indent}parts.append(_v(len(v)))",
                f"{indent}parts.append(v)",
            ]
        elif ftype in ("long", "int"):
            lo, hi = (_LONG_MIN, _LONG_MAX) if ftype == "long" else (_INT_MIN, _INT_MAX)
            lines += [
                f"{indent}if type(v) is not int or not {lo} <= v <= {hi}:",
                f"{indent}    _check_long({name!r}, {lo}, {hi}, v)",
                f"{indent}parts.append(_v(v))",
            ]
        else:
            lines.append(f"{indent}parts.append(_W[{ftype!r}](v))")
    lines.append("    return b''.join(parts)")
    exec("\n".join(lines), scope)  # noqa: S102 - source generated from a parsed schema
    encode: Callable[[Mapping[str, Any]], bytes] = scope["encode"]
    return encode
