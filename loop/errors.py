"""Errors a researcher can fix: the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A problem the user can fix (a bad option, a missing setting); says how."""
