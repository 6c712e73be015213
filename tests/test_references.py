"""Ticket-reference extraction: the rules, the CLI contract, and properties (hypothesis)."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.references import (
    DEFAULT_RULES,
    ReferenceRules,
    compile_pattern,
    extract_references,
    normalise_digits,
)

SF = ReferenceRules(helpdesk="salesforce")


def numbers(text: str, rules: ReferenceRules = DEFAULT_RULES, urls: tuple[str, ...] = ()
            ) -> list[str]:
    return [r.number for r in extract_references(text, rules, urls)]


@pytest.mark.parametrize(("text", "expected"), [
    ("my ticket number is 48213", ["48213"]),
    ("Support ticket #48213 still open", ["48213"]),
    ("case: 00012345", ["00012345"]),
    ("Ref. 48213", ["48213"]),
    ("Mijn zaaknummer is 00012345", ["00012345"]),
    ("ticketnr 48213", ["48213"]),
    ("meldingsnummer: 4567890", ["4567890"]),
    ("aanvraag 123456 staat nog open", ["123456"]),
    ("zaken 00012345 en 00012346", ["00012345", "00012346"]),
    ("Ticket-Nr. 48213", ["48213"]),
    ("Vorgangsnummer 123456", ["123456"]),
    ("Fall 123456 bitte", ["123456"]),
    ("Tickets 123456, 123457 und 123458", ["123456", "123457", "123458"]),
    ("numéro de ticket 48213", ["48213"]),
    ("mon dossier n° 48213", ["48213"]),
    ("número de caso: 00012345", ["00012345"]),
    ("incidencia 48213 y 48214", ["48213", "48214"]),
    ("[#48213]", ["48213"]), ("RE: #48213", ["48213"]), ("Ticket#48213", ["48213"]),
    ("ticket ４８２１３", ["48213"]), ("caso ٤٨٢١٣", ["48213"]),
    ("ticket 48213 and again ticket 48213 #48213", ["48213"]),
    ("bestelnummer 12345, zaaknummer 67890", ["67890"]),
])
def test_references_in_five_languages(text: str, expected: list[str]) -> None:
    assert numbers(text) == expected


@pytest.mark.parametrize("text", [
    "order 123456", "bestelling #12345", "factuur 2024-001", "Rechnung 4711-22",
    "ticket 12", "#12", "#covid19", "#hello1234", "#2024goals", "ticket €149", "ticket 149 euro",
    "14:30 ticket", "ticket 2024-05-12", "v2.3.1 ticket", "iPhone 15", "error 500",
    "@user12345", "https://shop.example.com/orders/123456", "called 3 times about 48213",
    "since fall 2023", "ticket from yesterday 48213", "mijn ticket is nog niet opgelost",
    "bel 06-12345678", "ticket 49,99",
])
def test_not_references(text: str) -> None:
    assert numbers(text) == []


def test_spans_point_at_the_digits_as_written() -> None:
    text = "Zaak ００１２３ en ticket #48213"
    refs = extract_references(text)
    assert [(r.number, text[r.start:r.end]) for r in refs] == [
        ("00123", "００１２３"), ("48213", "48213")]


def test_helpdesk_links_in_text_and_in_expanded_urls() -> None:
    text = "zie https://acme.zendesk.com/hc/nl/requests/48213 aub"
    (ref,) = extract_references(text)
    assert text[ref.start:ref.end] == "48213" and ref.url is None
    url = "https://acme.zendesk.com/agent/tickets/555"
    (linked,) = extract_references("zie link", urls=(url,))
    assert (linked.number, linked.url, url[linked.start:linked.end]) == ("555", url, "555")
    assert numbers("zie link", SF, (url,)) == []  # a Zendesk link is no Salesforce case
    own = ReferenceRules(ticket_hosts=("support.acme.com",))
    assert numbers("https://support.acme.com/hc/requests/777", own) == ["777"]
    assert numbers("https://support.acme.com/hc/requests/777") == []


def test_a_mapping_can_add_its_own_pattern() -> None:
    rules = ReferenceRules(patterns=(compile_pattern(r"\bCS-(?P<number>\d{5,})"),))
    assert numbers("Over CS-123456: nog niks", rules) == ["123456"]
    with pytest.raises(ValueError, match="named group"):
        compile_pattern(r"CS-\d+")


def run_refs(helpdesk: str, stdin: bytes) -> list[dict[str, object]]:
    result = subprocess.run([sys.executable, "-m", "integrations", "refs", "--helpdesk",
                             helpdesk], input=stdin, capture_output=True, check=True)
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_refs_command_follows_the_contract() -> None:
    lines = ["Mijn zaaknummer is 00012345", "", "order 99999", "tickets ４８２１３ & 48214",
             "line\u2028with a separator ticket 123"]
    out = run_refs("salesforce", "\n".join(lines).encode() + b"\n")
    assert len(out) == len(lines)  # one object per input line, in order
    assert out[0] == {"refs": [{"number": "00012345", "start": 19, "end": 27}]}
    assert out[1] == {"refs": []} and out[2] == {"refs": []}
    assert out[3] == {"refs": [{"number": "48213", "start": 8, "end": 13},
                               {"number": "48214", "start": 16, "end": 21}]}
    assert [r["number"] for r in out[4]["refs"]] == ["123"]  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_extraction_never_raises_and_spans_cover_digits(text: str) -> None:
    for ref in extract_references(text):
        covered = text[ref.start:ref.end]
        assert covered and all(unicodedata.category(ch) == "Nd" for ch in covered)
        assert normalise_digits(covered) == ref.number


WORDS = st.sampled_from(["ticket", "zaaknummer", "Ticket-Nr.", "caso", "#", "order", "fall",
                         "https://a.zendesk.com/hc/requests/", "@", "en", "und", ",", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(WORDS, st.from_regex(r"\d{1,9}", fullmatch=True)), max_size=20))
def test_ticket_like_text_never_breaks_the_span_rule(parts: list[str]) -> None:
    text = " ".join(parts)
    for ref in extract_references(text, urls=[text]):
        source = ref.url if ref.url is not None else text
        assert normalise_digits(source[ref.start:ref.end]) == ref.number
