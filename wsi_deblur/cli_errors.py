"""How the ``wsi-deblur`` commands fail: one line on stderr naming the problem, and the documented exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from ._types import OutputError, SlideError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    click.echo(f"wsi-deblur: error: {message}", err=True)
    sys.exit(code)


def errors(func: F) -> F:
    """Turn the library's errors into one line on stderr and the documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            fail(str(exc), 2)
        except (SlideError, OutputError, ValueError) as exc:
            fail(str(exc))
        except OSError as exc:
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            fail(f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume", 130)

    return wrapper  # type: ignore[return-value]
