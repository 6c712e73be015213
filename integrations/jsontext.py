"""JSON on the web tier's hot path: orjson, with the standard library's answer where they differ.

Every X delivery is parsed once and its events written once (into the intake journal), and
with the standard library those two steps were about a sixth of a web worker's Python time
(py-spy, docs/architecture.md "Ingest performance"); orjson does them several times faster.
Where orjson refuses what `json` accepts (a lone surrogate such as `"\\ud800"`, `NaN`, a byte
order mark, keys that are not strings), `json` decides, so every outcome, including each
error message, is the one the standard library gives; only valid, ordinary JSON takes the
fast path. One difference remains: orjson reads an integer beyond 64 bits as a float (X's
ids are 63-bit snowflakes, and deskbridge reads every id as a string: a float id is refused).
https://github.com/ijl/orjson#deserialize
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse JSON text; raises json.JSONDecodeError (or UnicodeDecodeError) as `json.loads`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value: Any) -> bytes:
    """UTF-8 JSON of `value`, non-ASCII characters as they are (`ensure_ascii=False`)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _escaped(value).encode()


def dumps_text(value: Any) -> str:
    """`dumps` as text."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _escaped(value)


def _escaped(value: Any) -> str:
    # Non-string keys, or a lone surrogate (no UTF-8 can carry one): `json` writes both, and
    # with every non-ASCII character escaped the text is plain ASCII that reads back the same.
    return json.dumps(value)
