"""Fitting an agent's answer into X's limits, measured the way X measures.

X counts a post's length with weights (most Latin text 1 per character, CJK and emoji 2, every
URL 23 whatever its length) and allows 280: https://docs.x.com/resources/fundamentals/counting-characters
The count comes from twitter-text-parser, a port of X's twitter-text that passes its
conformance suite; nothing here counts by hand.
"""

from __future__ import annotations

import re
import warnings

with warnings.catch_warnings():
    # twitter-text-parser imports pkg_resources, which warns that it is deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", UserWarning)
    from twitter_text import parse_tweet

MAX_WEIGHTED_LENGTH = 280
ELLIPSIS = "…"


def weighted_length(text: str) -> int:
    """The length X gives `text` (a URL counts 23, CJK and emoji 2)."""
    return int(parse_tweet(text).weightedLength)


def fits(text: str, limit: int = MAX_WEIGHTED_LENGTH) -> bool:
    return weighted_length(text) <= limit


def split_thread(text: str, limit: int = MAX_WEIGHTED_LENGTH) -> list[str]:
    """`text` as one post if it fits, else a numbered thread ("… (1/3)") of posts that fit.

    Breaks between words; a single word longer than a post is cut where it must be.
    """
    text = text.strip()
    if fits(text, limit):
        return [text]
    total = 2
    while True:  # the numbering's own length depends on how many parts there are
        parts = _pack(text.split(), limit - weighted_length(f" ({total}/{total})"))
        if len(parts) <= total:
            return [f"{part} ({i}/{len(parts)})" for i, part in enumerate(parts, 1)]
        total = len(parts)


def truncate_with_link(text: str, link: str, limit: int = MAX_WEIGHTED_LENGTH) -> str:
    """`text` cut between words to fit with "… <link>" after it (the link counts 23)."""
    text = text.strip()
    if fits(text, limit):
        return text
    suffix = f"{ELLIPSIS} {link}"
    budget = limit - weighted_length(" " + suffix)
    (head, *_) = _pack(text.split(), budget) or [""]
    return f"{head}{suffix}" if not head else f"{head} {suffix}"


def _pack(words: list[str], budget: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if weighted_length(candidate) <= budget:
            current = candidate
            continue
        if current:
            parts.append(current)
        current = word
        while weighted_length(current) > budget:  # one word longer than a whole post
            cut = _longest_prefix(current, budget)
            parts.append(current[:cut])
            current = current[cut:]
    if current:
        parts.append(current)
    return parts


def _longest_prefix(word: str, budget: int) -> int:
    low, high = 1, len(word)
    while low < high:
        mid = (low + high + 1) // 2
        if weighted_length(word[:mid]) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


_SPACES = re.compile(r"[ \t]+")


def plain(text: str) -> str:
    """Agent text tidied for X: trailing spaces and runs of blank lines removed."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
