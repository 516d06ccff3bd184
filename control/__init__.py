"""The Django management plane (issue 5)."""
