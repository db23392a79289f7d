"""Command-line plumbing of the stages: one-line errors, exit codes, signals, progress bars."""
