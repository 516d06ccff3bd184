"""Prompt-lookup drafts read only the history they were given, and adapt their length."""

from __future__ import annotations

from inference.lookup import LookupConfig, NgramIndex


def test_a_repeated_ngram_drafts_what_followed_it() -> None:
    index = NgramIndex(LookupConfig(max_draft=4, ngram_min=2, ngram_max=3))
    index.extend([1, 2, 3, 4, 5, 6, 7, 9, 1, 2, 3])
    index.budget = 4
    assert index.draft() == [4, 5, 6, 7]


def test_the_longest_match_wins_over_a_more_recent_shorter_one() -> None:
    index = NgramIndex(LookupConfig(max_draft=2, ngram_min=1, ngram_max=3))
    index.budget = 2
    # "8 1 2" occurred with 30 after it; "2" alone occurred later with 40 after it.
    index.extend([8, 1, 2, 30, 31, 5, 2, 40, 41, 8, 1, 2])
    assert index.draft() == [30, 31]


def test_the_most_recent_occurrence_of_an_ngram_is_used() -> None:
    index = NgramIndex(LookupConfig(max_draft=1, ngram_min=2, ngram_max=2))
    index.extend([1, 2, 10, 1, 2, 20, 1, 2])
    assert index.draft() == [20]


def test_no_match_no_draft_and_the_last_ngram_never_finds_itself() -> None:
    index = NgramIndex(LookupConfig(max_draft=4, ngram_min=3, ngram_max=4))
    index.extend([1, 2, 3, 4, 5])
    assert index.draft() == []
    index.extend([3, 4, 5])  # now "3 4 5" occurred before, followed by 3
    index.budget = 4
    assert index.draft() == [3, 4, 5]


def test_a_draft_stops_at_the_end_of_the_history() -> None:
    index = NgramIndex(LookupConfig(max_draft=8, ngram_min=2, ngram_max=2))
    index.extend([7, 7, 7])
    index.budget = 8
    assert index.draft() == [7]  # "7 7" first ended at index 1, followed by one 7


def test_draft_length_starts_short_doubles_on_a_full_accept_and_halves_on_a_refusal() -> None:
    index = NgramIndex(LookupConfig(max_draft=8, ngram_min=1, ngram_max=1))
    index.extend([*range(20), 0])
    assert len(index.draft()) == 2
    index.accepted(2, 2)
    assert len(index.draft()) == 4
    index.accepted(4, 4)
    assert len(index.draft()) == 8
    index.accepted(8, 8)
    assert len(index.draft()) == 8  # at most max_draft
    index.accepted(8, 3)  # a partial accept keeps the length
    assert len(index.draft()) == 8
    index.accepted(8, 0)
    assert len(index.draft()) == 4
    for _ in range(3):
        index.accepted(4, 0)
    assert index.draft() == []  # the turn has stopped drafting


def test_off_means_no_draft() -> None:
    index = NgramIndex(LookupConfig(max_draft=0), [1, 2, 3, 1, 2, 3, 1, 2])
    assert index.draft() == []
