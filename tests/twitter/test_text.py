"""Fitting answers into X's weighted length (measured by twitter-text-parser)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.twitter.text import (
    fits,
    split_thread,
    truncate_with_link,
    weighted_length,
)


def test_weights_follow_x_rules() -> None:
    assert weighted_length("a" * 10) == 10
    assert weighted_length("日本") == 4  # CJK counts 2
    assert weighted_length("zie https://example.com/" + "x" * 100) == 4 + 23  # a URL counts 23


def test_short_text_is_one_post_unchanged() -> None:
    assert split_thread("Bedankt!") == ["Bedankt!"]


def test_long_text_becomes_a_numbered_thread_of_valid_posts() -> None:
    text = " ".join(f"woord{i}" for i in range(200))
    parts = split_thread(text)
    assert len(parts) > 1 and all(fits(p) for p in parts)
    assert [p.rsplit(" ", 1)[1] for p in parts] == [f"({i}/{len(parts)})"
                                                     for i in range(1, len(parts) + 1)]
    rejoined = " ".join(p.rsplit(" ", 1)[0] for p in parts)
    assert rejoined == text  # nothing lost, nothing added but the numbers


def test_truncation_keeps_the_link_whole() -> None:
    link = "https://acme.zendesk.com/hc/requests/48213"
    out = truncate_with_link("Uw verzoek " * 60, link)
    assert fits(out) and out.endswith("… " + link)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=1500))
def test_any_text_splits_into_posts_that_fit(text: str) -> None:
    parts = split_thread(text)
    assert all(fits(p) for p in parts)
