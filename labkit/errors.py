"""User-facing errors: raised for user mistakes, printed by the CLI without a traceback."""

from __future__ import annotations


class LabkitError(Exception):
    """A mistake the user can fix (bad path, bad flag, bad data). The CLI prints it without a traceback.

    `exit_code` is what `labkit` exits with (2 = unusable input by default; commands may use 1 for
    "ran, but found problems").
    """

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
