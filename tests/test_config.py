"""Tests of loading and validating deskbridge.toml (integrations/config.py and the provider
settings models). All configuration texts here are hand-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from integrations.config import (
    Settings,
    find_key_line,
    load_settings,
    parse_settings,
    redact_url,
)
from integrations.errors import ConfigError, ConfigProblem
from integrations.salesforce.settings import SalesforceSettings
from integrations.twitter.settings import XChannelSettings
from integrations.zendesk.settings import ZendeskSettings

EXAMPLE = Path(__file__).resolve().parent.parent / "deskbridge.example.toml"

X_CHANNEL = """\
[channels.acme_x]
type = "x"
account_id = "1234567890"
handle = "acme"
consumer_key = "ck"
consumer_secret = "cs"
"""

ZENDESK = """\
[helpdesks.zd]
type = "zendesk"
subdomain = "acme"
email = "support@acme.example"
token = "tok"
"""

MAPPING = """\
[[mappings]]
name = "acme"
channel = "acme_x"
helpdesk = "zd"
"""

VALID = X_CHANNEL + ZENDESK + MAPPING

# Distinctive secrets, so that finding one in any output can only be a leak.
SECRETS = {
    "x_consumer_key": "ck-4a1f9e",
    "x_consumer_secret": "cs-77b2d0",
    "x_access_token": "at-19c3aa",
    "x_access_token_secret": "ats-5e0b41",
    "x_bearer": "bt-c0ffee",
    "zd_token": "zt-8d8d21",
    "zd_webhook": "zw-3bb7f2",
    "sf_password": "sp-a61e07",
    "sf_security": "ss-f00d42",
    "sf_consumer_key": "sk-2c9e55",
    "sf_consumer_secret": "sc-93d1b8",
    "store_password": "pg-0e6c3f",
    "queue_password": "rd-71aa0c",
}

SECRET_LADEN = f"""\
[store]
url = "postgresql://deskbridge:{SECRETS["store_password"]}@db.internal/deskbridge"

[queue]
url = "redis://:{SECRETS["queue_password"]}@redis.internal:6379/0"

[channels.acme_x]
type = "x"
account_id = "1234567890"
handle = "acme"
consumer_key = "{SECRETS["x_consumer_key"]}"
consumer_secret = "{SECRETS["x_consumer_secret"]}"
access_token = "{SECRETS["x_access_token"]}"
access_token_secret = "{SECRETS["x_access_token_secret"]}"
bearer_token = "{SECRETS["x_bearer"]}"

[helpdesks.zd]
type = "zendesk"
subdomain = "acme"
email = "support@acme.example"
token = "{SECRETS["zd_token"]}"
webhook_secret = "{SECRETS["zd_webhook"]}"

[helpdesks.sf]
type = "salesforce"
username = "integration@acme.example"
password = "{SECRETS["sf_password"]}"
security_token = "{SECRETS["sf_security"]}"
consumer_key = "{SECRETS["sf_consumer_key"]}"
consumer_secret = "{SECRETS["sf_consumer_secret"]}"
"""


def problems_of(text: str, environ: dict[str, str] | None = None) -> dict[str, ConfigProblem]:
    """Parse text that must fail (with no environment by default); return problems by key."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, environ=environ or {})
    return {problem.key: problem for problem in caught.value.problems}


def dig(data: object, *keys: str) -> object:
    """Follow `keys` down nested dicts."""
    for key in keys:
        assert isinstance(data, dict)
        data = data[key]
    return data


def line_of(text: str, fragment: str) -> int:
    """The 1-based number of the first line of `text` containing `fragment`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if fragment in line)


# --- The example file and defaults -------------------------------------------------------


def test_example_file_loads_with_no_environment_variables() -> None:
    settings = load_settings(EXAMPLE, environ={})

    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.store.url == f"sqlite:///{EXAMPLE.parent / 'var' / 'deskbridge.db'}"
    assert settings.queue.url == f"sqlite:///{EXAMPLE.parent / 'var' / 'queue.db'}"
    channel = settings.channels["acme_x"]
    assert (channel.account_id, channel.handle) == ("1234567890", "acme")
    assert channel.consumer_key.get_secret_value() == "demo-consumer-key"
    helpdesk = settings.helpdesks["acme_zendesk"]
    assert isinstance(helpdesk, ZendeskSettings)
    assert helpdesk.token is not None and helpdesk.token.get_secret_value() == "demo-token"
    assert [(m.name, m.channel, m.helpdesk) for m in settings.mappings] == [
        ("acme", "acme_x", "acme_zendesk")
    ]
    assert settings.source == str(EXAMPLE)


def test_example_file_takes_its_values_from_the_environment() -> None:
    environ = {"DESKBRIDGE_PORT": "9001", "ACME_X_CONSUMER_KEY": "real-key"}

    settings = load_settings(EXAMPLE, environ=environ)

    assert settings.server.port == 9001
    assert settings.channels["acme_x"].consumer_key.get_secret_value() == "real-key"


def test_example_salesforce_block_is_valid_once_uncommented() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# [helpdesks.acme_salesforce]")
    end = text.index("\n\n", start)
    block = "\n".join(line.removeprefix("# ") for line in text[start:end].splitlines())
    environ = {"ACME_SALESFORCE_PASSWORD": "pw", "ACME_SALESFORCE_SECURITY_TOKEN": "st"}

    settings = parse_settings(text[:start] + block + text[end:], environ=environ)

    salesforce = settings.helpdesks["acme_salesforce"]
    assert isinstance(salesforce, SalesforceSettings)
    assert salesforce.password.get_secret_value() == "pw"


def test_empty_file_gives_every_default(tmp_path: Path) -> None:
    settings = parse_settings("", base_dir=tmp_path)

    assert settings.server.model_dump() == {
        "host": "127.0.0.1",
        "port": 8080,
        "max_body_bytes": 1_048_576,
        "public_url": None,
        "trusted_proxies": 0,
    }
    assert (settings.log.level, settings.log.format) == ("INFO", "text")
    assert settings.store.url == f"sqlite:///{tmp_path / 'var' / 'deskbridge.db'}"
    assert settings.queue.url == f"sqlite:///{tmp_path / 'var' / 'queue.db'}"
    assert settings.queue.model_dump(exclude={"url"}) == Settings().queue.model_dump(
        exclude={"url"}
    )
    assert (settings.channels, settings.helpdesks, settings.mappings) == ({}, {}, [])
    assert not (tmp_path / "var").exists()


def test_mapping_defaults_open_tickets_for_every_kind() -> None:
    settings = parse_settings(VALID)

    mapping = settings.mappings[0]
    assert mapping.open_tickets_for == ["mention", "reply", "quote", "dm"]
    assert (mapping.include_retweets, mapping.tags) == (False, [])


# --- Loading files -----------------------------------------------------------------------


def test_load_settings_without_a_path_uses_deskbridge_config(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[server]\nport = 9999\n[store]\nurl = "sqlite:///data/links.db"\n')

    settings = load_settings(None, environ={"DESKBRIDGE_CONFIG": str(config)})

    assert settings.server.port == 9999
    assert settings.store.url == f"sqlite:///{tmp_path / 'data' / 'links.db'}"
    assert settings.source == str(config)


def test_load_settings_without_a_path_or_variable_reads_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deskbridge.toml").write_text("[server]\nport = 8181\n")
    monkeypatch.chdir(tmp_path)

    assert load_settings(environ={}).server.port == 8181


def test_missing_file_says_which_and_how_to_name_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"DESKBRIDGE_CONFIG": str(missing)})

    [problem] = caught.value.problems
    assert problem.key == "<file>"
    assert str(missing) in problem.message
    assert "DESKBRIDGE_CONFIG" in problem.message


def test_problems_name_the_file_they_come_from(tmp_path: Path) -> None:
    config = tmp_path / "deskbridge.toml"
    config.write_text("[server]\nport = 0\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})

    assert caught.value.problems == [
        ConfigProblem("server.port", "Input should be greater than or equal to 1", str(config), 2)
    ]


# --- TOML syntax and validation problems -------------------------------------------------


def test_bad_toml_points_at_its_line() -> None:
    problems = problems_of('[server]\nhost = "127.0.0.1"\nport = = 8080\n')

    assert problems["<toml>"].line == 3
    assert "invalid TOML" in problems["<toml>"].message


def test_missing_required_key_is_named_and_points_at_its_table() -> None:
    text = VALID.replace('subdomain = "acme"\n', "")

    problems = problems_of(text)

    assert list(problems) == ["helpdesks.zd.subdomain"]
    assert problems["helpdesks.zd.subdomain"].line == line_of(text, "[helpdesks.zd]")
    assert problems["helpdesks.zd.subdomain"].message == "required setting is missing"


def test_unknown_setting_is_named_with_its_line() -> None:
    text = "[server]\nhost = '0.0.0.0'\nprot = 8080\n"

    problem = problems_of(text)["server.prot"]

    assert problem.line == 3
    assert "unknown setting" in problem.message


def test_mapping_naming_an_unknown_helpdesk_names_it_and_what_exists() -> None:
    text = VALID.replace('helpdesk = "zd"', 'helpdesk = "zendsk"')

    problem = problems_of(text)["mappings[0].helpdesk"]

    assert problem.message == "unknown helpdesk 'zendsk' (configured: zd)"
    assert problem.line == line_of(text, 'helpdesk = "zendsk"')


def test_every_bad_mapping_is_reported_at_its_own_index() -> None:
    second = MAPPING.replace('channel = "acme_x"', 'channel = "acme_y"')
    text = VALID + second

    problems = problems_of(text)

    assert set(problems) == {"mappings[1].name", "mappings[1].channel"}
    assert "duplicate mapping name 'acme'" in problems["mappings[1].name"].message
    assert problems["mappings[1].channel"].message == (
        "unknown channel 'acme_y' (configured: acme_x)"
    )
    assert problems["mappings[1].channel"].line == line_of(text, 'channel = "acme_y"')


def test_bad_value_inside_a_list_is_located_by_index() -> None:
    text = VALID + 'open_tickets_for = ["mention", "like"]\n'

    problem = problems_of(text)["mappings[0].open_tickets_for[1]"]

    assert problem.line == line_of(text, "open_tickets_for")


def test_problems_in_several_sections_are_all_reported() -> None:
    text = VALID.replace('handle = "acme"', 'handle = "acme!"').replace(
        'subdomain = "acme"', 'subdomain = "acme.zendesk.com"'
    )

    problems = problems_of(text)

    assert set(problems) == {"channels.acme_x.handle", "helpdesks.zd.subdomain"}
    assert "acme.zendesk.com" in problems["helpdesks.zd.subdomain"].message  # the hint
    assert problems["channels.acme_x.handle"].line == line_of(text, "handle =")


@pytest.mark.parametrize(
    ("type_line", "message"),
    [
        ('type = "mastodon"', "unknown channel type 'mastodon' (known types: x)"),
        ("", "every channel needs a type (known types: x)"),
    ],
)
def test_channel_type_must_be_a_known_one(type_line: str, message: str) -> None:
    text = X_CHANNEL.replace('type = "x"', type_line)

    problems = problems_of(text)

    assert list(problems) == ["channels.acme_x.type"]
    assert problems["channels.acme_x.type"].message == message


def test_unknown_helpdesk_type_lists_the_known_ones() -> None:
    text = ZENDESK.replace('type = "zendesk"', 'type = "freshdesk"')

    problem = problems_of(text)["helpdesks.zd.type"]

    assert "freshdesk" in problem.message
    assert "known types: zendesk, salesforce" in problem.message
    assert problem.line == line_of(text, "type =")


@pytest.mark.parametrize(
    "tokens", ['token = "a"\noauth_token = "b"\n', ""], ids=["both", "neither"]
)
def test_zendesk_needs_exactly_one_token(tokens: str) -> None:
    text = ZENDESK.replace('token = "tok"\n', tokens)

    problem = problems_of(text)["helpdesks.zd"]

    assert "exactly one of token" in problem.message
    assert problem.line == line_of(text, "[helpdesks.zd]")


def test_secret_of_the_wrong_type_is_never_repeated() -> None:
    text = X_CHANNEL.replace('consumer_secret = "cs"', "consumer_secret = 12345678")

    with pytest.raises(ConfigError) as caught:
        parse_settings(text, environ={})

    [problem] = caught.value.problems
    assert problem.key == "channels.acme_x.consumer_secret"
    assert problem.line == line_of(text, "consumer_secret")
    assert "12345678" not in str(caught.value)
    assert "12345678" not in repr(caught.value.problems)


def test_x_handle_loses_its_at_and_an_unquoted_id_is_accepted() -> None:
    text = X_CHANNEL.replace('"1234567890"', "1234567890").replace('"acme"', '"@acme"')

    channel = parse_settings(text).channels["acme_x"]

    assert (channel.account_id, channel.handle) == ("1234567890", "acme")


def test_x_account_id_must_be_the_numeric_id() -> None:
    text = X_CHANNEL.replace('"1234567890"', '"acme"')

    assert "digits only" in problems_of(text)["channels.acme_x.account_id"].message


# --- Interpolation -----------------------------------------------------------------------


def test_unset_variable_names_the_key_the_variable_and_the_line() -> None:
    text = X_CHANNEL.replace('"cs"', '"${ACME_X_SECRET}"').replace('"ck"', '"${ACME_X_KEY}"')

    problems = problems_of(text, environ={})

    secret = problems["channels.acme_x.consumer_secret"]
    assert secret.message == "environment variable ACME_X_SECRET is not set"
    assert secret.line == line_of(text, "consumer_secret")
    assert "ACME_X_KEY" in problems["channels.acme_x.consumer_key"].message


def test_unset_variable_in_a_typed_setting_is_reported_once() -> None:
    problems = problems_of('[server]\nport = "${PORT}"\n')

    assert [p.message for p in problems.values()] == ["environment variable PORT is not set"]


def test_variables_fill_strings_inside_tables_and_arrays() -> None:
    text = VALID + 'tags = ["${TEAM}", "x"]\n'

    settings = parse_settings(text, environ={"TEAM": "support"})

    assert settings.mappings[0].tags == ["support", "x"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, "fallback"), ({"NAME": ""}, "fallback"), ({"NAME": "set"}, "set")],
    ids=["unset", "empty", "set"],
)
def test_default_is_used_when_the_variable_is_unset_or_empty(
    environ: dict[str, str], expected: str
) -> None:
    settings = parse_settings('[queue]\nname = "${NAME:-fallback}"\n', environ=environ)

    assert settings.queue.name == expected


def test_double_dollar_writes_a_literal_reference() -> None:
    settings = parse_settings('[queue]\nname = "$${NOT_A_VAR}-${A}"\n', environ={"A": "a"})

    assert settings.queue.name == "${NOT_A_VAR}-a"


def test_malformed_reference_is_reported() -> None:
    problem = problems_of('[queue]\nname = "${1abc}"\n')["queue.name"]

    assert "malformed" in problem.message
    assert problem.line == 2


def test_a_variable_cannot_inject_toml_structure() -> None:
    injected = 'x"\n[server]\nport = 1\n'

    settings = parse_settings('[queue]\nname = "${NAME}"\n', environ={"NAME": injected})

    assert settings.queue.name == injected
    assert settings.server.port == 8080


def test_port_given_as_a_string_is_read_as_a_number() -> None:
    settings = parse_settings('[server]\nport = "${PORT:-8080}"\n', environ={"PORT": "9090"})

    assert settings.server.port == 9090


# --- Secrets -----------------------------------------------------------------------------


@pytest.fixture
def secret_laden() -> Settings:
    return parse_settings(SECRET_LADEN, environ={})


def test_repr_and_str_of_settings_show_no_secret(secret_laden: Settings) -> None:
    shown = [repr(secret_laden), str(secret_laden)]
    for model in [
        secret_laden.store,
        secret_laden.queue,
        secret_laden.channels["acme_x"],
        *secret_laden.helpdesks.values(),
    ]:
        shown += [repr(model), str(model)]

    for text in shown:
        for name, secret in SECRETS.items():
            assert secret not in text, name


def test_repr_masks_store_and_queue_passwords(secret_laden: Settings) -> None:
    assert "postgresql://deskbridge:***@db.internal/deskbridge" in repr(secret_laden.store)
    assert "redis://:***@redis.internal:6379/0" in repr(secret_laden)


def test_redacted_settings_hide_every_secret(secret_laden: Settings) -> None:
    redacted = secret_laden.redacted()

    assert redacted["store"] == {"url": "postgresql://deskbridge:***@db.internal/deskbridge",
                                 "journal": True, "intake_stall_seconds": 60.0}
    assert dig(redacted, "channels", "acme_x", "consumer_secret") == "[redacted]"
    assert dig(redacted, "helpdesks", "zd", "subdomain") == "acme"
    for name, secret in SECRETS.items():
        assert secret not in str(redacted), name


def test_secret_values_lists_every_secret(secret_laden: Settings) -> None:
    assert set(secret_laden.secret_values()) == set(SECRETS.values())


def test_secret_values_ignores_unset_secrets() -> None:
    assert parse_settings("").secret_values() == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        (
            "postgresql://u:p%40ss@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////var/lib/deskbridge.db", "sqlite:////var/lib/deskbridge.db"),
        ("support@acme.example", "support@acme.example"),
    ],
)
def test_redact_url_masks_only_a_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- SQLite paths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/x.db", "sqlite:///{base}/var/x.db"),
        ("sqlite:///../shared/x.db", "sqlite:///{parent}/shared/x.db"),
        ("sqlite+pysqlite:///x.db", "sqlite+pysqlite:///{base}/x.db"),
        ("sqlite:////srv/x.db", "sqlite:////srv/x.db"),
        ("sqlite://", "sqlite://"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_relative_sqlite_paths_resolve_against_the_config_directory(
    tmp_path: Path, url: str, expected: str
) -> None:
    base = tmp_path / "conf"

    settings = parse_settings(f'[store]\nurl = "{url}"\n[queue]\nurl = "{url}"\n', base_dir=base)

    want = expected.format(base=base, parent=tmp_path)
    assert (settings.store.url, settings.queue.url) == (want, want)


# --- Finding lines -----------------------------------------------------------------------

LINES = """\
title = "x"                         # 1
[server]                            # 2
port = 8080                         # 3
[channels."acme.x"]                 # 4
type = "x"                          # 5
notes = '''                         # 6
fake = 1
'''                                 # 8
handle = "acme"                     # 9
[[mappings]]                        # 10
name = "a"                          # 11
[[mappings]]                        # 12
name = "b"                          # 13
[[mappings.rules]]                  # 14
match = "refund"                    # 15
[[mappings.rules]]                  # 16
match = "broken"                    # 17
[helpdesks]                         # 18
zd.type = "zendesk"                 # 19
zd.subdomain = "acme"               # 20
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("title",), 1),
        (("server", "port"), 3),
        (("server", "host"), 2),
        (("channels", "acme.x", "handle"), 9),
        (("channels", "acme.x", "fake"), 4),
        (("mappings", 0, "name"), 11),
        (("mappings", 1, "name"), 13),
        (("mappings", 1, "channel"), 12),
        (("mappings", 1, "rules", 1, "match"), 17),
        (("mappings", 1, "rules", 0), 14),
        (("helpdesks", "zd", "subdomain"), 20),
        (("helpdesks", "zd", "email"), 19),
        (("log", "level"), None),
    ],
)
def test_find_key_line(path: tuple[str | int, ...], line: int | None) -> None:
    assert find_key_line(LINES, path) == line


def test_find_key_line_points_inside_inline_tables_at_their_line() -> None:
    text = '[helpdesks]\nzd = { type = "zendesk", subdomain = "acme" }\n'

    assert find_key_line(text, ("helpdesks", "zd", "email")) == 2


def test_direct_construction_checks_the_same_rules() -> None:
    with pytest.raises(ValueError, match="exactly one of token"):
        ZendeskSettings(type="zendesk", subdomain="acme", email="a@b.example")
    with pytest.raises(ValueError, match="at least 15|greater than or equal to 15"):
        XChannelSettings.model_validate(
            {
                "type": "x",
                "account_id": "1",
                "handle": "a",
                "consumer_key": "k",
                "consumer_secret": "s",
                "poll_interval_seconds": 5,
            }
        )


def test_mapping_reference_patterns_must_compile_with_a_number_group() -> None:
    text = ('[channels.c]\ntype = "x"\naccount_id = "1"\nhandle = "h"\nconsumer_key = "k"\n'
            'consumer_secret = "s"\n[helpdesks.h]\ntype = "zendesk"\nsubdomain = "a"\n'
            'email = "a@b.example"\ntoken = "t"\n[[mappings]]\nname = "m"\nchannel = "c"\n'
            'helpdesk = "h"\nreference_patterns = ["CS-\\\\d+", "(unclosed"]\n')
    with pytest.raises(ConfigError) as err:
        parse_settings(text, environ={})
    (problem,) = err.value.problems
    assert problem.key == "mappings[0].reference_patterns"
    assert "named group" in problem.message and problem.line == 16
