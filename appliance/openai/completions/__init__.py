"""POST /v1/completions: router, wire models and serving."""
