"""The composition root: the `keep` command (keep.cli) and the settings (keep.settings)."""
