"""Prompt-lookup drafts: guesses of a turn's next tokens, read from its own session's tokens.

A turn's history is everything its session's KV holds or is about to hold: earlier turns,
the prompt (retrieved passages included) and what it has generated so far. When the last few
tokens of that history occurred before, the tokens that followed them then are the draft.
The engine decodes the draft with the real next token in one batch and keeps the longest
prefix the sampler confirms, so the output is exactly what it would be without drafts: each
token is still sampled from logits conditioned on the real tokens before it.

Drafts never come from another session: an index belongs to one turn and reads only that
turn's own history.

Cost control: on a CPU a drafted token costs nearly what a real one does, so a turn drafts
only on an n-gram match of `ngram_min` tokens or more, and each turn's draft length adapts to
what it gets accepted: it starts at two tokens, doubles (up to `max_draft`) on each draft
accepted whole, and halves when one is refused outright, so that a turn whose drafts keep
failing stops drafting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_FIRST_DRAFT = 2  # a turn's first drafts are short: a refused one costs little


@dataclass(frozen=True)
class LookupConfig:
    max_draft: int = 8  # tokens per draft at most; 0 turns drafting off
    ngram_min: int = 3
    ngram_max: int = 5
    # Draft only in steps with at most this many generating turns: on a CPU every drafted
    # token costs about what a real one does, and with a KV stream per sequence each drafting
    # turn's draft is a micro-batch of its own, so drafts pay only where the step is narrow.
    max_turns: int = 1


class NgramIndex:
    """Where each n-gram of one history last occurred with at least one token after it."""

    def __init__(self, config: LookupConfig, history: Iterable[int] = ()) -> None:
        self.config = config
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token after it
        self.budget = min(_FIRST_DRAFT, config.max_draft)  # this turn's draft length, adapted
        self._sizes = range(config.ngram_min, max(config.ngram_min, config.ngram_max) + 1)
        self.extend(history)

    def extend(self, tokens: Iterable[int]) -> None:
        """Append tokens to the history. An n-gram is indexed once a token follows it, so the
        history's own last n-gram never finds itself."""
        history, after = self.tokens, self._after
        for token in tokens:
            end = len(history)  # the n-grams ending just before `token` now have a follower
            for n in self._sizes:
                if n > end:
                    break
                after[tuple(history[end - n : end])] = end
            history.append(token)

    def draft(self) -> list[int]:
        """The tokens that followed the longest earlier occurrence of the history's last
        n-gram, at most `budget` of them; none without a match."""
        history, k = self.tokens, self.budget
        if k <= 0:
            return []
        end = len(history)
        for n in reversed(self._sizes):
            if n > end:
                continue
            at = self._after.get(tuple(history[end - n : end]))
            if at is not None:
                return history[at : at + k]
        return []

    def accepted(self, drafted: int, kept: int) -> None:
        """Adapt the draft length to how much of a draft of `drafted` tokens was kept."""
        if kept == 0:
            self.budget //= 2
        elif kept == drafted:
            self.budget = min(self.config.max_draft, 2 * self.budget)
