"""Reading provider bodies safely: JSON within bounds, each field checked before it is used.

Every provider parser reads its fields through these helpers, so one table of rules holds for
X, Zendesk and Salesforce alike: a body that does not fit is a `PayloadError` whose message
names the field (the web tier answers 400 with it), never a `TypeError` deep in a worker.
- ids are ASCII digits (`"١٢"` and `"²"` pass `str.isdigit()`, and are refused here), of
  bounded length;
- text is a string; a lone surrogate (valid JSON, not valid Unicode: no UTF-8 or database
  can hold it) becomes U+FFFD and a NUL is dropped, so the text can be stored and sent; the
  raw payload beside it keeps the original;
- integers are integers (not booleans, not strings) within a range;
- objects and lists are what they claim; a missing optional field is `None`, not an error;
- nesting is bounded (a body 2,000 levels deep once reached `RecursionError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from integrations import jsontext
from integrations.errors import PayloadError

MAX_DEPTH = 32  # X's deepest real body (a quoted reply in a DM delivery) is about 8
MAX_ID_DIGITS = 20  # 2**64 has 20 digits: X snowflakes and Zendesk ids are 64-bit
MAX_INT = 2**63 - 1
MAX_TEXT = 100_000  # characters; X's longest post is 25,000, a Zendesk comment 65,535 bytes

# A lone surrogate (no UTF-8 can encode one, so neither SQLite nor psycopg can) or a NUL
# (PostgreSQL text cannot hold one): what no store takes.
UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
# What a sender is told, in words rather than the interpreter's: Python refuses integers of
# more than 4,300 digits with a ValueError that names `sys.set_int_max_str_digits()`.
HUGE_NUMBER = "body holds a number of thousands of digits, which no field takes"


def not_utf8(err: UnicodeDecodeError) -> PayloadError:
    """Return the refusal of a body that is not UTF-8, saying where."""
    return PayloadError(f"body is not UTF-8 (an invalid byte at {err.start})")


def parse_json(data: bytes | str, loads: Callable[[Any], Any] = jsontext.loads) -> Any:
    """Return `data` parsed by `loads` (orjson with the standard library's answers, unless a
    parser of the caller's own); raises json.JSONDecodeError and UnicodeDecodeError as it
    does, and PayloadError for JSON no field could hold (nested past the parser's limit, a
    number past the interpreter's 4,300 digits)."""
    try:
        return loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise
    except RecursionError as err:
        raise PayloadError(f"body is nested more than {MAX_DEPTH} levels deep") from err
    except ValueError as err:  # the interpreter's limit on an integer's digits
        raise PayloadError(HUGE_NUMBER) from err


def load_object(body: bytes | str) -> dict[str, Any]:
    """Return the body as a JSON object.

    Raises PayloadError, with the reason, when it is not JSON, not an object, nested deeper
    than MAX_DEPTH, or holds a number too large for any field.
    """
    try:
        value = parse_json(body)
    except UnicodeDecodeError as err:
        raise not_utf8(err) from err
    except json.JSONDecodeError as err:
        raise PayloadError(f"body is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise PayloadError("body is not a JSON object")
    check_depth(value)
    return value


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise PayloadError when the objects and lists of parsed JSON nest deeper than `limit`.

    Level by level, with exact type tests (a parser makes plain dicts and lists): a third of
    the cost of `isinstance` over generators, 5 µs for a recorded mention.
    """
    level: list[Any] = [value]
    depth = 1
    while True:
        children: list[Any] = []
        for node in level:
            for child in (node.values() if type(node) is dict else node):
                kind = type(child)
                if kind is dict or kind is list:
                    children.append(child)
        if not children:
            return
        depth += 1
        if depth > limit:
            raise PayloadError(f"body is nested more than {limit} levels deep")
        level = children


def mapping(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """Return the object at `key` ({} when absent or null); raises PayloadError otherwise."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where} is not an object")
    return value


def sequence(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    """Return the list at `key` ([] when absent or null); raises PayloadError otherwise."""
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"{where} is not a list")
    return value


def objects(parent: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    """Return the list of objects at `key`; raises PayloadError if any entry is not one."""
    items = sequence(parent, key, where)
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise PayloadError(f"{where}[{index}] is not an object")
    return items


def digits(value: Any, where: str, *, max_digits: int = MAX_ID_DIGITS) -> str | None:
    """Return an id (a string of ASCII digits, or an integer) as a string; None when absent.

    Raises PayloadError for anything else: another type, other characters, too long.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"{where} is not an id: a {type(value).__name__}")
    if isinstance(value, int):
        if value < 0 or value > MAX_INT * 2 + 1:
            raise PayloadError(f"{where} is out of range for an id")
        return str(value)
    if len(value) > max_digits:
        raise PayloadError(f"{where} is longer than {max_digits} digits")
    if not is_id(value, max_digits=max_digits):
        raise PayloadError(f"{where} is not an id: {value[:40]!r} is not ASCII digits")
    return value


def is_id(value: str, *, max_digits: int = MAX_ID_DIGITS) -> bool:
    """Return whether `value` is an id: ASCII digits only, at most `max_digits` of them
    (`"١٢"` and `"²"` pass `str.isdigit()`, and are not)."""
    return 0 < len(value) <= max_digits and value.isascii() and value.isdigit()


def required_digits(value: Any, where: str, *, max_digits: int = MAX_ID_DIGITS) -> str:
    """`digits`, but absent is an error too."""
    result = digits(value, where, max_digits=max_digits)
    if result is None:
        raise PayloadError(f"{where} is missing")
    return result


def text(value: Any, where: str, *, max_chars: int = MAX_TEXT) -> str:
    """Return a string field as storable text ("" when absent); raises PayloadError when it is
    not a string or is longer than `max_chars`."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{where} is not a string: a {type(value).__name__}")
    if len(value) > max_chars:
        raise PayloadError(f"{where} is longer than {max_chars} characters")
    return storable(value)


def optional_text(value: Any, where: str, *, max_chars: int = MAX_TEXT) -> str | None:
    """`text`, with absent (or empty) as None."""
    result = text(value, where, max_chars=max_chars)
    return result or None


def storable(value: str) -> str:
    """Return `value` with lone surrogates as U+FFFD and NUL characters dropped."""
    if not UNSTORABLE.search(value):
        return value
    return UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", value)


def integer(value: Any, where: str, *, low: int = 0, high: int = MAX_INT) -> int | None:
    """Return an integer field (None when absent); raises PayloadError when it is not an
    integer (a boolean or a string is not) or lies outside [low, high]."""
    if value is None:
        return None
    if isinstance(value, float) and abs(value) >= 2**63:  # JSON integers past 64 bits
        raise PayloadError(f"{where} is out of range ({low}..{high})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{where} is not an integer: a {type(value).__name__}")
    if not low <= value <= high:
        raise PayloadError(f"{where} is out of range ({low}..{high})")
    return value


def boolean(value: Any, where: str) -> bool:
    """Return a boolean field (False when absent); raises PayloadError for another type."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PayloadError(f"{where} is not a boolean: a {type(value).__name__}")
    return value
