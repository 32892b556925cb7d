"""What may be said about a failure outside the event stores: the error's class, its
stable code, and the field paths it concerns. Never its message.

Messages carry input: pydantic's ``ValidationError`` quotes the offending value (a piece of
a crisis note), an enum's ``ValueError`` repeats what it was given, a domain error may name
an answer. Logs, dead letters, metric labels and span attributes are read by people and
systems that must not see clinical text, so they get an :class:`ErrorSummary` instead.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass

#: A field name as our models spell them; anything else in a path (a dict key taken from
#: the input) is shown as ``<key>``.
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
_MAX_PATHS = 10


@dataclass(frozen=True)
class ErrorSummary:
    """An error as ids and names only: safe to log, to put in a header or a dead letter."""

    error_class: str
    code: str | None = None
    field_paths: tuple[str, ...] = ()
    cause_class: str | None = None
    #: Where in our code it was raised (``module.py:line in function``), for whoever mends it.
    raised_at: str | None = None

    def __str__(self) -> str:
        text = self.error_class
        if self.code:
            text += f" ({self.code})"
        if self.field_paths:
            text += " at " + ", ".join(self.field_paths)
        if self.cause_class:
            text += f", caused by {self.cause_class}"
        if self.raised_at:
            text += f" [{self.raised_at}]"
        return text


def describe(error: BaseException) -> ErrorSummary:
    """The summary of ``error``: class, code (domain errors and pydantic error types) and
    field paths; its message is left out."""
    from pydantic import ValidationError

    code: str | None = getattr(error, "code", None) if isinstance(getattr(error, "code", None), str) else None
    paths: list[str] = []
    if isinstance(error, ValidationError):
        kinds: list[str] = []
        for detail in error.errors(include_url=False, include_context=False, include_input=False)[:_MAX_PATHS]:
            paths.append(_path(detail.get("loc", ())))
            kinds.append(str(detail.get("type", "")))
        code = ",".join(dict.fromkeys(k for k in kinds if _FIELD.match(k))) or None
    elif isinstance(error, KeyError) and error.args:
        paths.append(_path((error.args[0],)))
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return ErrorSummary(
        error_class=type(error).__name__,
        code=code,
        field_paths=tuple(dict.fromkeys(p for p in paths if p)),
        cause_class=type(cause).__name__ if cause is not None and cause is not error else None,
        raised_at=_raised_at(error),
    )


def _raised_at(error: BaseException) -> str | None:
    """The innermost frame of the error in our own packages (a location in code, no data)."""
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        parts = frame.filename.replace("\\", "/").split("/")
        for i, part in enumerate(parts):
            if part in ("services", "domain", "contracts") and i < len(parts) - 1:
                found = f"{'/'.join(parts[i:])}:{frame.lineno} in {frame.name}"
                break
    return found


def _path(loc: tuple[object, ...] | list[object]) -> str:
    parts = []
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            parts.append(str(part))
        elif isinstance(part, str) and _FIELD.match(part):
            parts.append(part)
        else:
            parts.append("<key>")
    return ".".join(parts)


def frames(error: BaseException) -> str:
    """Where an error was raised, as source locations only (no exception message)."""
    return "".join(traceback.format_tb(error.__traceback__)).rstrip()
