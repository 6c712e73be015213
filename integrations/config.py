"""The validated configuration of deskbridge, loaded from `deskbridge.toml`.

Loading goes: TOML text -> `${VAR}` interpolation of string values -> pydantic validation ->
relative SQLite paths resolved against the file's directory. Every problem found on the way
becomes a `ConfigProblem` naming the dotted key and, where the text allows, its line; they
are raised together as one `ConfigError`. No message ever repeats a configured value, since
it may be a secret.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from integrations.errors import ConfigError, ConfigProblem
from integrations.references import compile_pattern
from integrations.salesforce.settings import SalesforceSettings
from integrations.twitter.settings import XChannelSettings
from integrations.zendesk.settings import ZendeskSettings

__all__ = [
    "ChannelSettings",
    "HelpdeskSettings",
    "LogSettings",
    "MappingSettings",
    "QueueSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "find_key_line",
    "load_settings",
    "parse_settings",
    "redact_url",
]

KeyPath = tuple[str | int, ...]

CONFIG_ENV_VAR = "DESKBRIDGE_CONFIG"
DEFAULT_CONFIG_FILE = "deskbridge.toml"
REDACTED = "[redacted]"

# The provider registry: adding a provider means adding its settings model to one of these
# unions; each model's `type` Literal is its tag in the file. Channels are a one-member
# Union so that `type` is already checked, with the same messages, as it will be for two.
ChannelSettings = Annotated[Union[XChannelSettings], Field(discriminator="type")]  # noqa: UP007
HelpdeskSettings = Annotated[ZendeskSettings | SalesforceSettings, Field(discriminator="type")]

TicketTrigger = Literal["mention", "reply", "quote", "dm"]


def _every_ticket_trigger() -> list[TicketTrigger]:
    """All the kinds of message that can open a ticket (the default of a mapping)."""
    return ["mention", "reply", "quote", "dm"]


def _type_tags(union: object) -> tuple[str, ...]:
    """List the `type` tags of the members of an annotated discriminated union."""
    members = get_args(union)[0]
    models = get_args(members) or (members,)
    return tuple(str(tag) for m in models for tag in get_args(m.model_fields["type"].annotation))


_SECTION_TYPES: dict[str, tuple[str, ...]] = {
    "channels": _type_tags(ChannelSettings),
    "helpdesks": _type_tags(HelpdeskSettings),
}
_SECTION_NOUN = {"channels": "channel", "helpdesks": "helpdesk"}


# --- URLs --------------------------------------------------------------------------------


def _split_url(url: str) -> SplitResult | None:
    """Split a URL, or None when it is not one urllib can read."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """Mask the password of a URL, leaving everything else as written.

    `postgresql://u:pw@h/db` becomes `postgresql://u:***@h/db`; a URL without a password
    (or a string that is not a URL) comes back unchanged. Never raises.
    """
    parts = _split_url(url)
    if parts is None or not parts.password:
        return url
    start = url.find("://") + 3
    if url[start : start + len(parts.netloc)] != parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{url[:start]}{user}:***@{hostport}{url[start + len(parts.netloc) :]}"


def _url_passwords(url: str) -> list[str]:
    """The password of a URL as written and percent-decoded (a log line may show either)."""
    parts = _split_url(url)
    if parts is None or not parts.password:
        return []
    return list(dict.fromkeys([parts.password, unquote(parts.password)]))


# --- The settings models -----------------------------------------------------------------


class _MasksUrlPasswords(BaseModel):
    """A section whose repr masks URL passwords (pydantic's own repr would show them)."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if isinstance(value, str) else value


class ServerSettings(BaseModel):
    """Where the webhook server listens and what it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    public_url: str | None = None
    # How many reverse proxies (nginx, a load balancer) stand in front and append to
    # X-Forwarded-For; 0 trusts none, so a sender cannot choose the address that is logged.
    trusted_proxies: int = Field(default=0, ge=0, le=5)


class LogSettings(BaseModel):
    """How much deskbridge logs, and in which format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class StoreSettings(_MasksUrlPasswords):
    """The database deskbridge keeps its state in (an SQLAlchemy URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "sqlite:///var/deskbridge.db"
    # SQLite only: each web process makes X deliveries durable in a journal file of its own
    # (`<database>.intake/`) and moves them into the store in batches. See intake.py.
    journal: bool = True
    # /readyz says "not ready" once a received event has waited this long to reach the store.
    intake_stall_seconds: float = Field(default=60.0, gt=0)


class QueueSettings(_MasksUrlPasswords):
    """The task queue: where tasks wait, how many workers run them, how they are retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "sqlite:///var/queue.db"
    name: str = "deskbridge"
    workers: int = Field(default=2, ge=1)
    max_attempts: int = Field(default=8, ge=1)
    backoff_base_seconds: float = Field(default=5.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    sweep_interval_seconds: int = Field(default=60, ge=1)
    sweep_grace_seconds: float = Field(default=120.0, gt=0)
    lease_seconds: float = Field(default=300.0, gt=0)


class MappingSettings(BaseModel):
    """A rule that links one channel to one helpdesk, and which messages open tickets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    channel: str
    helpdesk: str
    open_tickets_for: list[TicketTrigger] = Field(default_factory=_every_ticket_trigger)
    include_retweets: bool = False
    tags: list[str] = Field(default_factory=list)
    # An answer longer than one post: "thread" (numbered posts) or "truncate" (cut, with a
    # link to the whole answer: reply_link, where {ticket_id} stands for the ticket's id).
    long_replies: Literal["thread", "truncate"] = "thread"
    reply_link: str | None = None
    # Linking: a cited ticket whose requester is not known to be the sender becomes an
    # internal note marked unverified ("internal_note") or a new ticket ("new_ticket").
    unverified_reference: Literal["internal_note", "new_ticket"] = "internal_note"
    dm_public: bool = False  # may a DM become a public comment?
    session_window_days: int = Field(default=14, ge=1)
    reference_patterns: list[str] = Field(default_factory=list)  # each with (?P<number>...)
    ticket_hosts: list[str] = Field(default_factory=list)  # beside *.zendesk.com
    redact_deleted: bool = False  # remove a deleted post's text from the ticket too
    # New tickets: the helpdesk's group and brand, and their priority. A sender with at least
    # `priority_followers` followers, or in `vip_handles`, gets `vip_priority`.
    group_id: int | None = None
    brand_id: int | None = None
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    priority_followers: int | None = Field(default=None, ge=1)
    vip_handles: list[str] = Field(default_factory=list)
    vip_priority: Literal["low", "normal", "high", "urgent"] = "high"

    @field_validator("reference_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                compile_pattern(pattern)
            except (re.error, ValueError) as err:
                raise ValueError(f"reference pattern {pattern!r}: {err}") from err
        return patterns

    @model_validator(mode="after")
    def _truncate_needs_a_link(self) -> MappingSettings:
        if self.long_replies == "truncate" and not self.reply_link:
            raise ValueError('long_replies = "truncate" needs reply_link (the full answer)')
        if self.reply_link and "{ticket_id}" not in self.reply_link:
            raise ValueError("reply_link must contain {ticket_id}")
        return self


class _ReferenceErrors(ValueError):
    """Several cross-reference problems at once, each at its own path under `mappings`."""

    def __init__(self, issues: list[tuple[KeyPath, str]]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{_format_key(('mappings', *p))}: {m}" for p, m in issues))


class Settings(BaseModel):
    """All of deskbridge's configuration; an empty file is valid and runs on defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ServerSettings = Field(default_factory=ServerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    helpdesks: dict[str, HelpdeskSettings] = Field(default_factory=dict)
    mappings: list[MappingSettings] = Field(default_factory=list)

    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        """The path these settings were loaded from, or None when built in code."""
        return self._source

    @field_validator("mappings")
    @classmethod
    def _check_references(
        cls, mappings: list[MappingSettings], info: ValidationInfo
    ) -> list[MappingSettings]:
        """Require unique mapping names and channels and helpdesks that exist.

        A section that failed its own validation is missing from `info.data` and not
        checked, so one typo is not reported twice.

        Raises:
            _ReferenceErrors: listing every problem, each at its own key.
        """
        issues = _duplicate_names(mappings)
        for section, attr in (("channels", "channel"), ("helpdesks", "helpdesk")):
            if section in info.data:
                issues += _unknown_references(mappings, attr, info.data[section])
        if issues:
            raise _ReferenceErrors(issues)
        return mappings

    def secret_values(self) -> list[str]:
        """Every secret in the settings, longest first, for a log redaction filter.

        That is each `SecretStr` value and each password in a URL (as written and decoded).
        Longest first so that a filter replacing them in order never leaves part of one.
        """
        unique = dict.fromkeys(value for value in _secrets_in(self) if value)
        return sorted(unique, key=len, reverse=True)

    def redacted(self) -> dict[str, JsonValue]:
        """The settings as JSON-able data with every secret shown as "[redacted]"."""
        data = _redact(self)
        assert isinstance(data, dict)  # a model always redacts to a dict
        return data


def _duplicate_names(mappings: Sequence[MappingSettings]) -> list[tuple[KeyPath, str]]:
    """One issue per mapping whose name an earlier mapping already uses."""
    first_index: dict[str, int] = {}
    issues: list[tuple[KeyPath, str]] = []
    for index, mapping in enumerate(mappings):
        if mapping.name in first_index:
            earlier = first_index[mapping.name]
            message = f"duplicate mapping name {mapping.name!r} (also mappings[{earlier}])"
            issues.append(((index, "name"), message))
        first_index.setdefault(mapping.name, index)
    return issues


def _unknown_references(
    mappings: Sequence[MappingSettings], attr: str, configured: Mapping[str, object]
) -> list[tuple[KeyPath, str]]:
    """One issue per mapping whose `attr` (channel or helpdesk) names no configured key."""
    known = ", ".join(sorted(configured)) or "none"
    issues: list[tuple[KeyPath, str]] = []
    for index, mapping in enumerate(mappings):
        name = getattr(mapping, attr)
        if name not in configured:
            issues.append(((index, attr), f"unknown {attr} {name!r} (configured: {known})"))
    return issues


def _children(node: BaseModel) -> Iterator[tuple[str, object]]:
    """The fields of a model with their values, in declaration order."""
    for name in type(node).model_fields:
        yield name, getattr(node, name)


def _secrets_in(node: object) -> Iterator[str]:
    """Walk settings data and yield every secret string in it."""
    if isinstance(node, SecretStr):
        yield node.get_secret_value()
    elif isinstance(node, str):
        yield from _url_passwords(node)
    elif isinstance(node, BaseModel):
        for _, value in _children(node):
            yield from _secrets_in(value)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _secrets_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _secrets_in(value)


def _redact(node: object) -> JsonValue:
    """Turn settings data into JSON-able data with secrets and URL passwords masked."""
    if isinstance(node, SecretStr):
        return REDACTED
    if isinstance(node, str):
        return redact_url(node)
    if isinstance(node, BaseModel):
        return {name: _redact(value) for name, value in _children(node)}
    if isinstance(node, dict):
        return {str(key): _redact(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_redact(value) for value in node]
    assert node is None or isinstance(node, (bool, int, float))  # all a settings leaf can be
    return node


# --- Key paths and line numbers ----------------------------------------------------------

_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_KEY_PART_RE = re.compile(_KEY_PART)
_TABLE_RE = re.compile(rf"\s*\[\s*({_DOTTED_KEY})\s*\]\s*(?:#.*)?")
_ARRAY_TABLE_RE = re.compile(rf"\s*\[\[\s*({_DOTTED_KEY})\s*\]\]\s*(?:#.*)?")
_KEY_VALUE_RE = re.compile(rf"\s*({_DOTTED_KEY})\s*=")


def _format_key(path: Sequence[str | int]) -> str:
    """Render a key path as the user would write it: `mappings[1].channel`, `a."b.c"`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if _BARE_KEY_RE.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            text += f".{name}" if text else name
    return text or "<settings>"


def _split_dotted_key(text: str) -> tuple[str, ...]:
    """Split a TOML dotted key into its parts, unquoting quoted ones (escapes kept as is)."""
    parts = (match.group(0) for match in _KEY_PART_RE.finditer(text))
    return tuple(p[1:-1] if p[0] in "\"'" else p for p in parts)


def _with_indices(keys: Sequence[str], arrays: Mapping[KeyPath, int]) -> KeyPath:
    """Turn header keys into a key path, adding the current index of each array of tables."""
    path: KeyPath = ()
    for key in keys:
        path += (key,)
        if path in arrays:
            path += (arrays[path] - 1,)
    return path


def _opens_multiline_string(value: str) -> str | None:
    """The delimiter of a multi-line string that starts and stays open in `value`, if any."""
    for delimiter in ('"""', "'''"):
        if value.startswith(delimiter) and value.count(delimiter) == 1:
            return delimiter
    return None


def _index_key_lines(text: str) -> dict[KeyPath, int]:
    """Map every table header and key the text defines to the line it is defined on.

    A line-by-line scan, not a parser: it follows table headers (counting `[[array]]`
    entries) and `key = value` lines, and skips the insides of multi-line strings.
    Inline tables and arrays are not looked into; their keys resolve to the enclosing line.
    """
    lines: dict[KeyPath, int] = {}
    arrays: dict[KeyPath, int] = {}
    table: KeyPath = ()
    open_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if open_string is not None:
            open_string = None if open_string in line else open_string
        elif match := _ARRAY_TABLE_RE.fullmatch(line):
            keys = _split_dotted_key(match.group(1))
            array = _with_indices(keys[:-1], arrays) + (keys[-1],)
            arrays[array] = arrays.get(array, 0) + 1
            table = (*array, arrays[array] - 1)
            lines.setdefault(table, number)
        elif match := _TABLE_RE.fullmatch(line):
            table = _with_indices(_split_dotted_key(match.group(1)), arrays)
            lines.setdefault(table, number)
        elif match := _KEY_VALUE_RE.match(line):
            key = table + _split_dotted_key(match.group(1))
            for end in range(len(table) + 1, len(key) + 1):
                lines.setdefault(key[:end], number)
            open_string = _opens_multiline_string(line[match.end() :].strip())
    return lines


def _nearest_line(lines: Mapping[KeyPath, int], path: Sequence[str | int]) -> int | None:
    """The line of `path`, else of its nearest enclosing table or key, else None."""
    for end in range(len(path), 0, -1):
        line = lines.get(tuple(path[:end]))
        if line is not None:
            return line
    return None


def find_key_line(text: str, path: Sequence[str | int]) -> int | None:
    """Find the line of TOML `text` that defines key `path`, for pointing at a problem.

    `path` is like `("mappings", 1, "channel")`. A key that is not in the text points at
    its nearest enclosing table or key (for a missing key, the table's header); None when
    nothing encloses it. Never raises.
    """
    return _nearest_line(_index_key_lines(text), path)


# --- TOML and interpolation --------------------------------------------------------------

_TOML_LOCATION_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
# `$${` is a literal `${`; `${NAME}` and `${NAME:-default}` are references; any other `${`
# is malformed and reported rather than silently kept.
_REFERENCE_RE = re.compile(r"\$\$\{|\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})?")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text.

    Raises:
        ConfigError: with one `<toml>` problem at the line tomllib reports.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        location = _TOML_LOCATION_RE.search(message)
        line = int(location.group(1)) if location else None
        if location:
            message = _TOML_LOCATION_RE.sub(f" at column {location.group(2)}", message)
        problem = ConfigProblem("<toml>", f"invalid TOML: {message}", source, line)
        raise ConfigError([problem]) from err


def _interpolate_string(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Replace `${VAR}` references in one string; return it and what went wrong."""
    issues: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$${":
            return "${"
        if name is None:
            issues.append("malformed ${...} reference (write $${ for a literal ${)")
            return match.group(0)
        if default is not None and not environ.get(name):
            return default
        if name not in environ:
            issues.append(f"environment variable {name} is not set")
            return match.group(0)
        return environ[name]

    return _REFERENCE_RE.sub(replace, value), issues


def _interpolate(
    node: object, path: KeyPath, environ: Mapping[str, str], issues: list[tuple[KeyPath, str]]
) -> object:
    """Interpolate every string value under `node`, collecting issues with their key paths."""
    if isinstance(node, str):
        value, found = _interpolate_string(node, environ)
        issues.extend((path, message) for message in found)
        return value
    if isinstance(node, dict):
        return {
            key: _interpolate(value, (*path, key), environ, issues) for key, value in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(value, (*path, i), environ, issues) for i, value in enumerate(node)]
    return node


# --- Validation errors -------------------------------------------------------------------

_FRIENDLIER_MESSAGES = {
    "missing": "required setting is missing",
    "extra_forbidden": "unknown setting (check its spelling and its table)",
}


def _user_path(loc: Sequence[str | int]) -> KeyPath:
    """Drop the union tag pydantic adds after a channel or helpdesk key (`zd.zendesk.x`)."""
    path = tuple(loc)
    if len(path) >= 3 and path[2] in _SECTION_TYPES.get(str(path[0]), ()):
        return path[:2] + path[3:]
    return path


def _tag_issue(error_type: str, section: str, tag: object) -> str:
    """Explain a missing or unknown `type` of a channel or helpdesk, listing the known types."""
    known = ", ".join(_SECTION_TYPES[section])
    noun = _SECTION_NOUN[section]
    if error_type == "union_tag_invalid":
        return f"unknown {noun} type {tag!r} (known types: {known})"
    return f"every {noun} needs a type (known types: {known})"


def _issues_from_error(error: Mapping[str, Any]) -> list[tuple[KeyPath, str]]:
    """Turn one pydantic error into (key path, message) pairs, never quoting the input."""
    path, error_type = _user_path(error["loc"]), error["type"]
    context = error.get("ctx", {})
    if isinstance(context.get("error"), _ReferenceErrors):
        return [((*path, *sub), message) for sub, message in context["error"].issues]
    is_tag_error = error_type in ("union_tag_invalid", "union_tag_not_found")
    if is_tag_error and len(path) == 2 and path[0] in _SECTION_TYPES:
        return [((*path, "type"), _tag_issue(error_type, str(path[0]), context.get("tag")))]
    if error_type == "value_error":
        return [(path, str(context.get("error", error["msg"])))]
    return [(path, _FRIENDLIER_MESSAGES.get(error_type, error["msg"]))]


def _validation_issues(err: ValidationError) -> list[tuple[KeyPath, str]]:
    """Every problem in a ValidationError as (key path, message) pairs."""
    issues: list[tuple[KeyPath, str]] = []
    for error in err.errors(include_url=False, include_input=False):
        issues.extend(_issues_from_error(error))
    return issues


# --- Loading -----------------------------------------------------------------------------

_RELATIVE_SQLITE_RE = re.compile(r"(sqlite(?:\+\w+)?):///(?!/)(?!:memory:)(.+)", re.DOTALL)


def _resolve_sqlite_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite file URL absolute against `base_dir`; leave any other URL."""
    match = _RELATIVE_SQLITE_RE.fullmatch(url)
    if match is None:
        return url
    scheme, relative = match.groups()
    return f"{scheme}:///{os.path.normpath(base_dir / relative)}"


def _with_resolved_paths(settings: Settings, base_dir: Path) -> Settings:
    """Resolve the store and queue SQLite paths, so they do not depend on the working dir."""
    base = Path(os.path.abspath(base_dir))
    store = settings.store.model_copy(update={"url": _resolve_sqlite_url(settings.store.url, base)})
    queue = settings.queue.model_copy(update={"url": _resolve_sqlite_url(settings.queue.url, base)})
    return settings.model_copy(update={"store": store, "queue": queue})


def _validate(data: object) -> tuple[Settings | None, list[tuple[KeyPath, str]]]:
    """Validate interpolated data; return the settings or the problems."""
    try:
        return Settings.model_validate(data), []
    except ValidationError as err:
        return None, _validation_issues(err)


def _located_problems(
    issues: Sequence[tuple[KeyPath, str]], text: str, source: str
) -> list[ConfigProblem]:
    """Turn issues into problems with their lines, in the order they appear in the file."""
    lines = _index_key_lines(text)
    problems = [
        ConfigProblem(_format_key(p), m, source, _nearest_line(lines, p)) for p, m in issues
    ]
    return sorted(problems, key=lambda problem: (problem.line is None, problem.line or 0))


def parse_settings(
    text: str,
    *,
    source: str = "<string>",
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Settings:
    """Parse and validate the text of a `deskbridge.toml`.

    `${VAR}` references in string values are read from `environ` (default `os.environ`);
    relative SQLite paths are resolved against `base_dir` (default the working directory).

    Raises:
        ConfigError: listing every problem found, each with its key, `source` and line.
    """
    env = os.environ if environ is None else environ
    interpolation_issues: list[tuple[KeyPath, str]] = []
    data = _interpolate(_parse_toml(text, source), (), env, interpolation_issues)
    settings, validation_issues = _validate(data)
    reported = {path for path, _ in interpolation_issues}
    issues = interpolation_issues + [i for i in validation_issues if i[0] not in reported]
    if issues or settings is None:
        raise ConfigError(_located_problems(issues, text, source))
    resolved = _with_resolved_paths(settings, Path.cwd() if base_dir is None else base_dir)
    resolved._source = source
    return resolved


def _config_path(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The file to load: the argument, else $DESKBRIDGE_CONFIG, else ./deskbridge.toml."""
    if path is not None:
        return Path(path)
    return Path(environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_FILE)


def _read_config_file(path: Path) -> str:
    """Read a configuration file as UTF-8 (as TOML requires).

    Raises:
        ConfigError: with one `<file>` problem when it is missing or unreadable.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        message = (
            f"configuration file {str(path)!r} not found; name the file to load or set"
            f" {CONFIG_ENV_VAR} to its path (deskbridge.example.toml is a starting point)"
        )
        raise ConfigError([ConfigProblem("<file>", message, str(path))]) from err
    except (OSError, UnicodeDecodeError) as err:
        message = f"cannot read configuration file {str(path)!r}: {err.__class__.__name__}"
        raise ConfigError([ConfigProblem("<file>", message, str(path))]) from err


def load_settings(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate a `deskbridge.toml`.

    With no `path`, loads `$DESKBRIDGE_CONFIG` (read from `environ`, default `os.environ`),
    else `deskbridge.toml` in the working directory. Relative SQLite paths in it are
    resolved against the file's directory.

    Raises:
        ConfigError: when the file is missing or unreadable, or listing every problem in it.
    """
    env = os.environ if environ is None else environ
    config_path = _config_path(path, env)
    text = _read_config_file(config_path)
    return parse_settings(text, source=str(config_path), environ=env, base_dir=config_path.parent)
