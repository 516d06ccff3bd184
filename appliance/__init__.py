"""The data plane: Keep's OpenAI-compatible API, sessions, auth and limits (FastAPI)."""
