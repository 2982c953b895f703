"""Errors a user can fix: one clear line, exit status 2, no traceback."""


class UsageError(Exception):
    """Bad input: a flag, a config value, an output path. The message names field, value and what is allowed."""

    exit_code = 2
