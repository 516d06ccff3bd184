"""POST /v1/embeddings: router, wire models and serving."""
