"""Receipts and their log: RFC 8785 JSON, RFC 6962 Merkle trees, C2SP signed checkpoints.

Everything here needs only the standard library and `cryptography`, so that a client can
verify receipts offline on any machine. The appliance issues with it; control and
`keep verify` check with it.
"""
