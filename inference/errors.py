"""The inference exception tree.

    InferenceError
    ├── ModelError
    │   ├── ModelNotFound          the pinned file is missing
    │   ├── ModelIntegrityError    the file's sha256 is not the pinned one
    │   └── ModelLoadError         llama.cpp could not load it
    ├── RequestError               the request cannot run as asked
    │   ├── GrammarError           a response format could not be compiled
    │   │   └── GrammarDeadEnd     its grammar allows no next token while sampling
    │   ├── ContextOverflow        prompt plus completion exceed the sequence
    │   └── InvalidTokenId         a logit_bias token is outside the vocabulary
    ├── QueueFull                  the waiting line for KV sequences is full
    ├── DeadlineExceeded           the request ran past its deadline
    ├── Cancelled                  the consumer cancelled the request
    └── EngineStopped              the engine is closed or its worker died

Messages never carry request content: no prompt text, token, schema or completion.
"""


class InferenceError(Exception):
    pass


class ModelError(InferenceError):
    pass


class ModelNotFound(ModelError):
    pass


class ModelIntegrityError(ModelError):
    pass


class ModelLoadError(ModelError):
    pass


class RequestError(InferenceError):
    pass


class GrammarError(RequestError):
    pass


class GrammarDeadEnd(GrammarError):
    pass


class ContextOverflow(RequestError):
    pass


class InvalidTokenId(RequestError):
    pass


class QueueFull(InferenceError):
    pass


class DeadlineExceeded(InferenceError):
    pass


class Cancelled(InferenceError):
    pass


class EngineStopped(InferenceError):
    pass
