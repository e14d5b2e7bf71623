"""The one error type that means "the user's input is wrong": the CLI shows it as one line
(exit 2) and the service as a 4xx. Any other exception is a bug and is shown as one."""

from __future__ import annotations


class UserInputError(ValueError):
    """Input the user can fix (a file, a column, a setting, an id); the message says what and
    where. A subclass of ValueError so that callers catching ValueError still catch it."""
