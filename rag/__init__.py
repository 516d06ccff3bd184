"""RAM-only retrieval: parsing, chunking, embeddings and per-session vector indexes.

Imports nothing of Keep. Nothing here writes to disk: documents are parsed from bytes in
memory, and chunks and vectors live only in the collection objects that own them.
"""
