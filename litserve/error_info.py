"""What a failed request carries back about its error: the exception's type, message and traceback.

Capturing is cheap on purpose (a walk over the traceback's frames, a few microseconds): it happens in the
worker for every request a hook failed, whether or not anybody looks. The text is formatted only when
it is read (the request inspector does, for the requests it keeps), with source lines from `linecache`
of the reading process; a worker process's files are the same files, and a notebook cell's code is in
the kernel's own cache.
"""

from __future__ import annotations

import linecache
from dataclasses import dataclass
from typing import Any, final

__all__ = ["ErrorInfo"]

# Frames kept per traceback: the innermost ones, where the error happened (a deep recursion stays small).
MAX_FRAMES = 64
_Frame = tuple[str, int, str]  # file name, line number, function name


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ raises still gets its record
        return f"<{type(exc).__name__} whose str() failed>"


@final  # __reduce__ rebuilds exactly this class
@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One exception as plain values that cross process boundaries and hold no frames or locals.

    Stability: beta.

    Attributes:
        type_name: the exception's class, qualified by its module unless it is a builtin.
        message: `str(exception)`.
        frames: (file, line, function) from the outermost frame to the one that raised.
        cause: the exception it was raised from (`raise ... from`), or that it happened while handling.
    """

    type_name: str
    message: str
    frames: tuple[_Frame, ...] = ()
    cause: ErrorInfo | None = None

    @classmethod
    def of(cls, exc: BaseException, depth: int = 0) -> ErrorInfo:
        """Capture `exc` (and up to three exceptions it chains to) without formatting anything."""
        frames: list[_Frame] = []
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            frames.append((code.co_filename, tb.tb_lineno, code.co_name))
            tb = tb.tb_next
        kind = type(exc)
        module = kind.__module__
        name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
        chained = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        cause = cls.of(chained, depth + 1) if chained is not None and depth < 3 else None
        return cls(name, _message(exc), tuple(frames[-MAX_FRAMES:]), cause)

    @property
    def summary(self) -> str:
        """`Type: message`, one line."""
        return f"{self.type_name}: {self.message}" if self.message else self.type_name

    @property
    def traceback(self) -> str:
        """The traceback as Python prints it, chained exceptions first."""
        parts = [] if self.cause is None else [self.cause.traceback, "\nThe above exception led to this one:\n\n"]
        lines = ["Traceback (most recent call last):\n"]
        for filename, lineno, name in self.frames:
            lines.append(f'  File "{filename}", line {lineno}, in {name}\n')
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append(f"    {source}\n")
        lines.append(self.summary + "\n")
        return "".join(parts + lines)

    def __reduce__(self) -> tuple[type[ErrorInfo], tuple[Any, ...]]:
        return (ErrorInfo, (self.type_name, self.message, self.frames, self.cause))
