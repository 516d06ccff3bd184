"""OpenAI-compatible endpoint families: wire models, serving logic and routers, kept apart."""
