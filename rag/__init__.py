"""RAM-only retrieval: chunking, embeddings and per-session vector indexes (issue 4)."""
