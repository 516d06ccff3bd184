"""Keep's shared pieces: the settings object and the `keep` command."""
