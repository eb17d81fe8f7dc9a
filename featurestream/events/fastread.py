"""A record decoder compiled from a flat Avro schema (the consumer's hot path).

The read-side twin of :mod:`.fastwrite`. Supports records whose fields are
``null``, ``boolean``, ``int``, ``long``, ``float``, ``double``, ``bytes``,
``string``, ``enum``, ``fixed`` or a union of those. Other schemas (nested
records, arrays, maps, named-type references, logical types) return None from
:func:`compile_reader` and use fastavro.

For any input the decoder returns what ``fastavro.schemaless_reader`` returns
(writer schema only, no resolution) or raises the same exception type: ``EOFError``
when the body ends early, ``IndexError("list index out of range")`` for a union
branch or enum symbol that does not exist, ``UnicodeDecodeError`` for a string
that is not UTF-8. Like fastavro's C reader, a varint longer than 64 bits wraps
instead of failing. Property tests hold it to fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

__all__ = ["compile_reader"]

_MASK64 = 0xFFFFFFFFFFFFFFFF
# Bytes of a varint decoded inline; 9 * 7 = 63 bits cannot overflow a signed long.
_INLINE_VARINT_BYTES = 9
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class _BadIndex(IndexError):
    """A union branch or enum index the schema does not have (fastavro's message)."""

    def __init__(self) -> None:
        super().__init__("list index out of range")


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the zig-zag varint at ``pos``; return the value and the next position.

    Mirrors fastavro's C reader bit for bit: bytes past the 64th bit are OR-ed in
    at ``shift mod 64`` (the x86 shift) and the result is a signed 64-bit value.
    """
    n = 0
    shift = 0
    for end in range(pos, len(data)):
        b = data[end]
        n |= ((b & 0x7F) << (shift & 63)) & _MASK64
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), end + 1
        shift += 7
    raise EOFError(f"varint at byte {pos} runs past the end of the body ({len(data)} bytes)")


def _varint(target: str, ind: str) -> list[str]:
    # Unrolled: byte k of the varint is tested at nesting depth k, so a small id costs
    # one comparison and an epoch-millisecond time six. Nine bytes hold 63 bits; a
    # longer varint goes to _rl, which wraps past 64 bits the way fastavro does.
    lines = [
        f"{ind}b = data[p]",
        f"{ind}if b < 128:",
        f"{ind}    {target} = (b >> 1) ^ -(b & 1)",
        f"{ind}    p += 1",
        f"{ind}else:",
        f"{ind}    z = b & 127",
    ]
    for k in range(1, _INLINE_VARINT_BYTES):
        at = ind + "    " * k
        lines += [
            f"{at}b = data[p + {k}]",
            f"{at}if b < 128:",
            f"{at}    z |= b << {7 * k}",
            f"{at}    {target} = (z >> 1) ^ -(z & 1)",
            f"{at}    p += {k + 1}",
            f"{at}else:",
            f"{at}    z |= (b & 127) << {7 * k}",
        ]
    lines.append(f"{ind}{'    ' * _INLINE_VARINT_BYTES}{target}, p = _rl(data, p)")
    return lines


def _sized(target: str, size: str, ind: str, convert: str) -> list[str]:
    # fastavro fails a negative size the same way as one past the end: EOFError.
    short = f"e > n or {size} < 0" if not size.isdigit() else "e > n"
    return [
        f"{ind}e = p + {size}",
        f"{ind}if {short}:",
        f"{ind}    raise EOFError(f'Expected {{{size}}} bytes, read {{n - p}}')",
        f"{ind}{target} = data[p:e]{convert}",
        f"{ind}p = e",
    ]


class _Unsupported(Exception):
    """The schema has a type the compiled reader does not decode."""


# Types of a fixed width, decoded without a varint (target ``{t}``).
_FIXED_WIDTH: dict[str, tuple[str, ...]] = {
    "null": ("{t} = None",),
    "boolean": ("{t} = data[p] != 0", "p += 1"),
    "float": ("{t} = _uf(data, p)[0]", "p += 4"),
    "double": ("{t} = _ud(data, p)[0]", "p += 8"),
}


def _emit(ftype: Any, target: str, ind: str, scope: dict[str, Any], *, in_union: bool) -> list[str]:
    """Source lines that decode one value of ``ftype`` into ``target``."""
    if isinstance(ftype, list):
        if in_union:
            raise _Unsupported("nested union")
        return _union(ftype, target, ind, scope)
    if isinstance(ftype, dict):
        if "logicalType" in ftype:
            raise _Unsupported("logical type")
        if ftype.get("type") in ("enum", "fixed"):
            return _named(ftype, target, ind, scope)
        ftype = ftype.get("type")
    if not isinstance(ftype, str) or ftype not in _PRIMITIVES:
        raise _Unsupported(repr(ftype))
    if ftype in _FIXED_WIDTH:
        return [ind + line.format(t=target) for line in _FIXED_WIDTH[ftype]]
    if ftype in ("int", "long"):
        return _varint(target, ind)
    convert = ".decode()" if ftype == "string" else ""
    return [*_varint("s", ind), *_sized(target, "s", ind, convert)]


def _named(ftype: dict[str, Any], target: str, ind: str, scope: dict[str, Any]) -> list[str]:
    if ftype["type"] == "fixed":
        return _sized(target, str(int(ftype["size"])), ind, "")
    # fastavro indexes the symbol list with the decoded long: -1 is the last symbol.
    key = f"_E{len(scope)}"
    scope[key] = list(ftype["symbols"])
    count = len(scope[key])
    return [
        *_varint("i", ind),
        f"{ind}if {-count} <= i < {count}:",
        f"{ind}    {target} = {key}[i]",
        f"{ind}else:",
        f"{ind}    raise _BadIndex",
    ]


def _union(branches: list[Any], target: str, ind: str, scope: dict[str, Any]) -> list[str]:
    # fastavro indexes the branch list with the decoded long: -1 is the last branch.
    lines = [*_varint("i", ind), f"{ind}if i < 0:", f"{ind}    i += {len(branches)}"]
    for k, branch in enumerate(branches):
        lines.append(f"{ind}{'if' if k == 0 else 'elif'} i == {k}:")
        lines += _emit(branch, target, ind + "    ", scope, in_union=True)
    lines += [f"{ind}else:", f"{ind}    raise _BadIndex"]
    return lines


def compile_reader(parsed: Any) -> Callable[[bytes, int], tuple[dict[str, Any], int]] | None:
    """A decoder for record bodies of ``parsed`` (a fastavro-parsed schema), or None.

    The decoder is Python source generated from the schema: one straight-line
    function per record type. ``read(data, pos)`` decodes the body that starts at
    ``pos`` and returns the record and the position after it.

    Example:
        >>> from featurestream.events import load_contracts
        >>> read = compile_reader(load_contracts()[0].parsed)
        >>> read(b"\\x04e1\\x0e\\x06\\x08home\\x02", 0)
        ({'event_id': 'e1', 'user_id': 7, 'item_id': 3, 'page': 'home', 'event_time': 1}, 11)
    """
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    scope: dict[str, Any] = {
        "_rl": _read_long,
        "_ud": struct.Struct("<d").unpack_from,
        "_uf": struct.Struct("<f").unpack_from,
        "_BadIndex": _BadIndex,
        "_StructError": struct.error,
    }
    body: list[str] = []
    names: list[str] = []
    try:
        for k, field in enumerate(parsed["fields"]):
            body += _emit(field["type"], f"f{k}", "        ", scope, in_union=False)
            names.append(f"{field['name']!r}: f{k}")
    except _Unsupported:
        return None
    lines = [
        "def read(data, pos):",
        "    p = pos",
        "    n = len(data)",
        "    try:",
        *(body or ["        pass"]),
        "    except _BadIndex:",
        "        raise",
        "    except (IndexError, _StructError):",
        # A byte index or unpack_from past the end: the body is cut short.
        "        raise EOFError(f'body starting at byte {pos} ends early at byte {n}') from None",
        f"    return {{{', '.join(names)}}}, p",
    ]
    exec("\n".join(lines), scope)  # noqa: S102 - source generated from a parsed schema
    read: Callable[[bytes, int], tuple[dict[str, Any], int]] = scope["read"]
    return read
