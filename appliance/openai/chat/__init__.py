"""POST /v1/chat/completions: router, wire models, serving and prompt assembly."""
