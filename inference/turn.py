"""A turn (one request on its leased sequence) and the engine's content-free counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.contexts import KvContext
from inference.generation import Generation, GenerationRequest
from inference.lookup import NgramIndex
from inference.sampling import SamplerChain
from inference.textstream import TextStream


@dataclass(eq=False)
class Turn:
    """One request running on its leased sequence."""

    seq: int
    ctx: KvContext
    request: GenerationRequest
    gen: Generation
    chain: SamplerChain
    text: TextStream
    n_prompt: int
    n_past: int
    feed: list[int]
    prefilling: bool = True
    started: bool = False  # Started was sent
    n_gen: int = 0
    logits_at: int = -1
    leased_at: float = 0.0
    lookup: NgramIndex | None = None  # this turn's own history, for drafts
    drafted: list[int] = field(default_factory=list)  # decoded after feed[0] this step


@dataclass
class EngineStats:
    """Engine-internal figures. Content-free; never sent to a client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    queue_depth: int = 0  # requests submitted that have no sequence yet
    slots_in_use: int = 0
    steps: int = 0
    step_seconds: float = 0.0
    last_step_seconds: float = 0.0
    turn_seconds: float = 0.0  # a turn's lease, moving average
    contexts: int = 0  # open KV contexts (sessions)
    warm: int = 0
    parked: int = 0
    dropped: int = 0
    parked_bytes: int = 0
    preemptions: int = 0
    drafted_tokens: int = 0  # prompt-lookup draft tokens decoded
    accepted_tokens: int = 0  # of those, confirmed by the sampler
