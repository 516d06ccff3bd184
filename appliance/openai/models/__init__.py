"""GET /v1/models: router, wire models and serving."""
