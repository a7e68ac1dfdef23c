"""The one exception type users see."""


class CascadeError(Exception):
    """A problem the user can fix (bad input, missing file, wrong model).

    The CLI prints it as a single line and exits non-zero; library callers can catch it.
    """
