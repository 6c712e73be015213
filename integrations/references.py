"""Ticket references in a customer's message (pure): which ticket numbers they cite.

A number counts when a ticket word introduces it ("zaaknummer 00012345", "Ticket-Nr. 48213",
"número de caso: 00012345", "tickets 48213 and 48299"), when it stands alone behind `#`
("#48213", "[#48213]"), or when it is the id in a link to a helpdesk ticket
(`https://acme.zendesk.com/hc/nl/requests/48213`). Numbers introduced by words for other
things (orders, invoices, phones…), numbers inside other links and @handles, prices, dates,
times, versions and bare numbers are not references.

Digits are normalised one character for one (fullwidth and other Unicode decimal digits count
as their ASCII value), so every span indexes the original text and covers its digits exactly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

# ---------------------------------------------------------------- vocabulary

# Ticket words, by language; each may be glued to a number word ("zaaknummer", "Ticket-Nr.").
_TICKET_STEMS = {
    "en": ["support tickets?", "tickets?", "requests?", "cases?", "refs?", "references?"],
    "nl": ["ticketnr", "zaak", "zaken", "dossiers?", "referenties?", "meldings?", "meldingen",
           "aanvraag", "aanvragen"],
    "de": ["tickets?", "anfragen?", "fall", "fälle", "vorgangs?", "vorgänge", "referenz(?:en)?"],
    "fr": ["numéros? de tickets?", "numéros? de dossiers?", "dossiers?", "demandes?",
           "références?"],
    "es": ["números? de casos?", "números? de incidencias?", "casos?", "incidencias?",
           "solicitud(?:es)?", "referencias?"],
}
_NUMBER_WORD = r"(?:nummers?|nummern|numbers?|nr|no|num)"
_TICKET_WORD = (
    r"(?<![\w@#/])(?P<word>"
    + "|".join(sorted({s for stems in _TICKET_STEMS.values() for s in stems}, key=len,
                      reverse=True))
    + rf")(?:-?{_NUMBER_WORD}\.?)?(?![^\W\d])"  # digits may follow at once: "ticketnr48021"
)

# Words for other things: a number they introduce is never a ticket, not even behind `#`.
_OTHER_WORDS = (
    r"order(?:s|nr|nummer)?|order numbers?|invoices?|account(?: numbers?)?|customer numbers?"
    r"|tracking(?: numbers?| codes?)?|bookings?|booking numbers?|flights?|phone(?: numbers?)?"
    r"|tel|bestelling(?:en)?|bestelnummers?|bestelnr|ordernummers?|factuur(?:nummer)?"
    r"|facturen|klantnummers?|klantnr|postcode|bestellung(?:en)?|bestellnummer|rechnung(?:en)?"
    r"|rechnungsnummer|kundennummer|kundennr|commandes?|factures?|pedidos?|facturas?"
    r"|iban|kvk|btw|sendungsnummer|trackingnummer|vlucht|flug|vol|vuelo"
)

# What may stand between a ticket word and its number: one character or one word at a time,
# never a digit, so a run of them is matched possessively (`*+`): nothing to backtrack into.
_CONNECTOR = (
    r"(?:[\s#:\-–(\[=.]|(?:no|nr|n°|nº|núm|nb)\.?(?=[\s#:\d])"
    r"|(?:nummers?|numbers?|num|numéro|número|is|ist|est|es|was)(?!\w))"
)
_LIST_JOIN = r"\s*+(?:,|&|/|\+|\band\b|\ben\b|\bund\b|\bet\b|\by\b|\be\b)\s*+#?\s*+"

_NUMBER = r"(?P<num>\d+)"
# After a number: what shows it is a price, a date, a time, a version, a phone or a quantity.
_NOT_A_TICKET_AFTER = re.compile(
    r"(?:[.,]\d{1,2}(?!\d)|[-/:.]\d|\s?(?:%|€|\$|£|eur\b|euros?\b|usd\b|dollars?\b|kr\b"
    r"|pounds?\b|gb\b|mb\b|km\b|min\b|minutes?\b|minuten\b|uur\b|hours?\b|stunden\b|dagen\b"
    r"|days?\b|jours?\b|días\b|,-))",
    re.IGNORECASE,
)

_TICKET_RE = re.compile(rf"{_TICKET_WORD}(?P<conn>{_CONNECTOR}*+){_NUMBER}(?!\d)",
                        re.IGNORECASE)
_LIST_RE = re.compile(rf"{_LIST_JOIN}{_NUMBER}(?!\d)", re.IGNORECASE)
_HASH_RE = re.compile(r"(?<![\w&#/])#\s?(?P<num>\d+)(?![\w])")
_OTHER_RE = re.compile(rf"(?<!\w)(?:{_OTHER_WORDS})(?!\w){_CONNECTOR}*+$", re.IGNORECASE)
_YEAR = re.compile(r"(?:19|20)\d\d")

# Links: helpdesk ticket links count; any other link, e-mail address or @handle is masked.
# Each starts only where its run starts (the lookbehinds), so no run is scanned twice.
_URL_RE = re.compile(r"(?:https?://|www\.)\S+|(?<![\w.-])(?:[\w-]++\.)++[a-z]{2,}/\S*",
                     re.IGNORECASE)
_HANDLE_RE = re.compile(r"[@＠]\w+|(?<![\w.+-])[\w.+-]++@[\w-]+\.[\w.]+")
_TICKET_PATH = re.compile(
    r"^(?:https?://)?(?P<host>[\w.-]+)(?::\d+)?/(?:hc/(?:[\w-]+/)?)?"
    r"(?:requests|tickets|agent/tickets)/(?P<num>\d+)(?:[/?#].*)?$",
    re.IGNORECASE,
)


# ---------------------------------------------------------------- what comes out


@dataclass(frozen=True)
class TicketReference:
    """One cited ticket number: ASCII digits as written (leading zeros kept) and where.

    `start`/`end` index `url` when the reference came from an expanded link (`url` set),
    else the message text.
    """

    number: str
    start: int
    end: int
    url: str | None = None


@dataclass(frozen=True)
class ReferenceRules:
    """What counts for one mapping: the helpdesk, its ticket hosts, its own patterns."""

    helpdesk: str = "zendesk"
    min_digits: int = 3
    ticket_hosts: tuple[str, ...] = ()  # beside *.zendesk.com, e.g. "support.acme.com"
    patterns: tuple[re.Pattern[str], ...] = field(default_factory=tuple)  # group "number"


DEFAULT_RULES = ReferenceRules()


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A mapping's own reference pattern; raises ValueError without a `number` group."""
    compiled = re.compile(pattern, re.IGNORECASE)
    if "number" not in compiled.groupindex:
        raise ValueError("a reference pattern needs a named group (?P<number>...)")
    return compiled


# ---------------------------------------------------------------- extraction


def extract_references(
    text: str, rules: ReferenceRules = DEFAULT_RULES, urls: Sequence[str] = (),
) -> list[TicketReference]:
    """Every distinct ticket number cited in `text` (then in `urls`), in order of appearance."""
    plain = normalise_digits(text)
    masked, links = _mask(plain, rules)
    found = [*_ticket_word_refs(masked, rules), *_hash_refs(masked, rules),
             *_pattern_refs(masked, rules), *links]
    found.sort(key=lambda r: r.start)
    for url in urls:
        link = _ticket_link(normalise_digits(url), rules)
        if link is not None:
            found.append(TicketReference(link.number, link.start, link.end, url=url))
    return _distinct(found)


def normalise_digits(text: str) -> str:
    """`text` with every Unicode decimal digit as its ASCII digit (same length)."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)


def _mask(text: str, rules: ReferenceRules) -> tuple[str, list[TicketReference]]:
    """`text` with links and handles blanked out, and the helpdesk ticket links among them."""
    links: list[TicketReference] = []
    chars = list(text)
    for match in _URL_RE.finditer(text):
        url = match.group().rstrip(".,;:!?)]}'\"")
        link = _ticket_link(url, rules)
        if link is not None:
            links.append(TicketReference(link.number, match.start() + link.start,
                                         match.start() + link.end))
        chars[match.start():match.end()] = " " * (match.end() - match.start())
    for match in _HANDLE_RE.finditer(text):
        chars[match.start():match.end()] = " " * (match.end() - match.start())
    return "".join(chars), links


def _ticket_link(url: str, rules: ReferenceRules) -> TicketReference | None:
    match = _TICKET_PATH.match(url)
    if match is None or rules.helpdesk != "zendesk":
        return None
    host = match.group("host").lower()
    if not (host.endswith(".zendesk.com") or host in rules.ticket_hosts):
        return None
    return TicketReference(match.group("num"), match.start("num"), match.end("num"))


def _ticket_word_refs(text: str, rules: ReferenceRules) -> list[TicketReference]:
    refs = []
    for match in _TICKET_RE.finditer(text):
        if _is_season(match) or not _is_ticket_number(text, match, rules):
            continue
        refs.append(_ref(match))
        position = match.end()
        while (more := _LIST_RE.match(text, position)) and _is_ticket_number(text, more, rules):
            refs.append(_ref(more))
            position = more.end()
    return refs


def _hash_refs(text: str, rules: ReferenceRules) -> list[TicketReference]:
    return [_ref(m) for m in _HASH_RE.finditer(text)
            if _is_ticket_number(text, m, rules) and not _OTHER_RE.search(text[:m.start()])]


def _pattern_refs(text: str, rules: ReferenceRules) -> list[TicketReference]:
    return [TicketReference(m.group("number"), m.start("number"), m.end("number"))
            for pattern in rules.patterns for m in pattern.finditer(text)
            if m.group("number")]


def _is_ticket_number(text: str, match: re.Match[str], rules: ReferenceRules) -> bool:
    number = match.group("num")
    if len(number) < rules.min_digits:
        return False
    return _NOT_A_TICKET_AFTER.match(text, match.end("num")) is None


def _is_season(match: re.Match[str]) -> bool:
    # "since fall 2023": the English season, not the German "Fall" (case).
    return match.group("word").lower() == "fall" and bool(_YEAR.fullmatch(match.group("num")))


def _ref(match: re.Match[str]) -> TicketReference:
    return TicketReference(match.group("num"), match.start("num"), match.end("num"))


def _distinct(found: list[TicketReference]) -> list[TicketReference]:
    seen: set[str] = set()
    unique = []
    for ref in found:
        if ref.number not in seen:
            seen.add(ref.number)
            unique.append(ref)
    return unique
