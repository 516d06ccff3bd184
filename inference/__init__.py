"""llama.cpp inference: pinned models, per-session KV sequences, sampling, streaming text.

Imports nothing of Keep and never sees a dict from the wire: callers pass native types.
"""
