"""Checks of user-supplied arguments: each raises naming the argument, before anything changes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable


def type_error(name: str, expected: str, value: object) -> NoReturn:
    raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")


def check_text(name: str, value: object) -> str:
    """*value* as a plain ``str``: a subclass of ``str`` comes back as a plain copy.

    The inbox looks ids up in its dicts under its lock, and a subclass's own
    ``__hash__`` or ``__eq__`` would run there: user code under the lock.
    ``str.__str__`` copies without calling any of the subclass's methods.
    """
    if type(value) is str:
        return value
    if not isinstance(value, str):
        type_error(name, "str", value)
    return str.__str__(value)


def check_int(name: str, value: object) -> int:
    """*value* as a plain ``int`` (a subclass comes back as a plain copy, as in `check_text`)."""
    # bool is an int to Python, never to us: True is not a sequence number.
    if type(value) is int:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        type_error(name, "int", value)
    return int.__int__(value)


def check_seconds(name: str, value: object) -> float:
    """A finite or infinite non-negative number of seconds, as a plain ``float``.

    Converted first, without any method of a subclass (whose ``__float__``
    could answer something other than the value checked), then checked.
    """
    if isinstance(value, float):
        seconds = float.__float__(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            seconds = int.__float__(value)
        except OverflowError:  # an int too large for a float: as good as forever
            seconds = -math.inf if int.__int__(value) < 0 else math.inf
    else:
        type_error(name, "a number of seconds", value)
    if seconds != seconds or seconds < 0:  # NaN is the one value unequal to itself
        raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
    return seconds


def check_timeout(value: object) -> float | None:
    """``None`` and ``math.inf`` both mean no limit; both come back as ``None``."""
    if value is None:
        return None
    seconds = check_seconds("timeout", value)
    return None if math.isinf(seconds) else seconds


def check_callable(name: str, value: object) -> Callable[..., object]:
    if not callable(value):
        type_error(name, "callable", value)
    return value
