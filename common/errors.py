"""Errors a user can cause and fix; scripts print them as one line, not a traceback."""


class UserError(Exception):
    """A wrong path, flag or file: the message names it and says what to do."""
