"""The retrieval exception tree.

    RagError
    ├── EmbedderError              the pinned embedder is missing, altered or unloadable
    ├── DocumentError              a document cannot be taken as given
    │   ├── UnsupportedFormat      not text, Markdown, PDF or DOCX
    │   └── ParseError             the bytes do not parse as their format
    └── LimitExceeded              a collection limit would be passed
        ├── TooManyDocuments
        ├── DocumentTooLarge
        ├── TooManyChunks
        └── MemoryBudgetExceeded   the RAM budget shared by all collections

Messages never quote a document, a chunk or a vector.
"""


class RagError(Exception):
    pass


class EmbedderError(RagError):
    pass


class DocumentError(RagError):
    pass


class UnsupportedFormat(DocumentError):
    pass


class ParseError(DocumentError):
    pass


class LimitExceeded(RagError):
    pass


class TooManyDocuments(LimitExceeded):
    pass


class DocumentTooLarge(LimitExceeded):
    pass


class TooManyChunks(LimitExceeded):
    pass


class MemoryBudgetExceeded(LimitExceeded):
    pass
