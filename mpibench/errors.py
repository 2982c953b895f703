"""Errors a user can fix: one clear line, a distinct exit status, no traceback."""


class UsageError(Exception):
    """Bad input: a flag, a config value, an output path. The message names field, value and what is allowed."""

    exit_code = 2


class StoreError(Exception):
    """The results file cannot take more (the disk is full, a write failed); the rows before are intact."""

    exit_code = 4
