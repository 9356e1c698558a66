"""Shared hypothesis settings and structured mutation strategies for the fuzz tests.

Mutations start from valid input (a FHIR resource, an HL7 message, a DICOM file) and break it the
way real senders and attackers do: a field removed, a value of the wrong type, a delimiter moved,
a byte flipped, the input cut short. Pure random bytes alone would almost never get past the
first check of a parser.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_SCALE = int(os.environ.get("EXPEDIENTE_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(examples: int) -> settings:
    """Deterministic (derandomized), no example database, no deadline: the same cases on every CI run."""
    return settings(
        max_examples=_SCALE or examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                               HealthCheck.function_scoped_fixture],
    )


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) into a JSON value, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _set(value[head], rest, new)}
    copy = list(value)
    copy[head] = _set(copy[head], rest, new)
    return copy


def _delete(value: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return value
    if len(path) == 1:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != path[0]}
        return [v for i, v in enumerate(value) if i != path[0]]
    head = path[0]
    if isinstance(value, dict):
        return {**value, head: _delete(value[head], path[1:])}
    copy = list(value)
    copy[head] = _delete(copy[head], path[1:])
    return copy


@st.composite
def mutated_json(draw: st.DrawFn, seed: dict[str, Any], *, rounds: int = 3) -> Any:
    """``seed`` with up to ``rounds`` structural mutations: an element removed, replaced, retyped or added."""
    value: Any = seed
    for _ in range(draw(st.integers(min_value=1, max_value=rounds))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["delete", "replace", "wrap", "add", "stringify"]))
        if action == "delete" and path:
            value = _delete(value, path)
        elif action == "replace":
            value = _set(value, path, draw(json_values))
        elif action == "wrap":
            value = _set(value, path, draw(st.sampled_from([[_get(value, path)], {"value": _get(value, path)}])))
        elif action == "add":
            target = _get(value, path)
            if isinstance(target, dict):
                value = _set(value, path, {**target, draw(st.text(max_size=15)): draw(json_values)})
            elif isinstance(target, list):
                value = _set(value, path, [*target, draw(json_values)])
        elif action == "stringify":
            value = _set(value, path, str(_get(value, path)))
    return value


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


@st.composite
def mutated_text(draw: st.DrawFn, text: str, *, alphabet: str | None = None) -> str:
    """``text`` with up to three character-level edits: cut, inserted, deleted or replaced characters."""
    chars = st.text(alphabet=alphabet, min_size=1, max_size=4) if alphabet else st.text(min_size=1, max_size=4)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.sampled_from(["cut", "insert", "delete", "replace"]))
        if action == "cut":
            text = text[:at]
        elif action == "insert":
            text = text[:at] + draw(chars) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=8)):]
        else:
            piece = draw(chars)
            text = text[:at] + piece + text[at + len(piece):]
    return text


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, *, focus: int | None = None, skip: int = 0) -> bytes:
    """``data`` with up to four byte-level edits (flip, overwrite, insert, delete, truncate).

    ``focus`` keeps the edits in the first ``focus`` bytes (a header), where parsers make decisions;
    ``skip`` leaves the first bytes alone (a magic number that would only make every case "not this format").
    """
    buffer = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        limit = min(len(buffer), focus) if focus else len(buffer)
        if not buffer:
            break
        at = draw(st.integers(min_value=min(skip, limit - 1), max_value=max(0, limit - 1)))
        action = draw(st.sampled_from(["flip", "overwrite", "insert", "delete", "truncate", "length"]))
        if action == "flip":
            buffer[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif action == "overwrite":
            piece = draw(st.binary(min_size=1, max_size=8))
            buffer[at:at + len(piece)] = piece
        elif action == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del buffer[at:at + draw(st.integers(min_value=1, max_value=16))]
        elif action == "truncate":
            del buffer[at:]
        else:  # an element length field blown up: the classic way to make a reader read past the end
            buffer[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80"]))
    return bytes(buffer)
