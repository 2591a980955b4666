"""The one exception type users see.

Anything the user can fix (a bad file, a wrong key, a missing directory) is raised as `TuluError` with a message
that fits on one line and names where the problem is (``file:line: key: what was expected``). The CLI prints
it without a traceback; library callers (notebooks, tests) can catch it.
"""

from __future__ import annotations


class TuluError(Exception):
    """A user-facing problem, reported as one line."""


def at(path: object, line: int | None = None) -> str:
    """Format a location prefix: ``path:line`` or ``path``."""
    return f"{path}:{line}" if line is not None else f"{path}"


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first line of an exception's text (library errors can run to pages), or `default` (the exception's
    type name when not given) when the text is empty."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if default is None else default
