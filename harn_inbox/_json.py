"""Frozen JSON values: what `InboxEntry.payload` holds, so no consumer can change what another sees.

`freeze` checks a JSON value (``dict``, ``list``, ``str``, ``int``, ``float``,
``bool`` or ``None``, nested) and returns it read-only: objects become
`JsonObject` (a ``Mapping``), arrays `JsonArray` (a ``tuple``), and every
subclass of ``str``, ``int`` or ``float`` a plain copy. Both compare equal to
the plain ``dict`` and ``list`` they were made from and hash by value, so an
entry with a payload stays hashable. `thaw` gives the plain JSON value back.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, TypeAlias, final

#: A frozen JSON value, as `InboxEntry.payload` holds it.
JsonValue: TypeAlias = "JsonObject | JsonArray | str | int | float | bool | None"


@final
class JsonObject(Mapping[str, Any]):
    """A read-only JSON object: a ``Mapping`` of ``str`` to frozen JSON values.

    Equal to any mapping with equal items (a plain ``dict`` among them);
    hashable. ``JsonObject(mapping)`` checks and freezes *mapping*.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, mapping: Mapping[str, Any] = {}) -> None:
        frozen = freeze(mapping, "mapping")
        if not isinstance(frozen, JsonObject):
            raise TypeError(f"mapping must be a mapping, not {type(mapping).__name__}")
        self._items: dict[str, Any] = frozen._items
        self._hash: int | None = None

    @classmethod
    def _of(cls, items: dict[str, Any]) -> JsonObject:
        # *items* are frozen already and nobody else holds the dict.
        self = object.__new__(cls)
        self._items = items
        self._hash = None
        return self

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JsonObject):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"JsonObject({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (JsonObject._of, (self._items,))


@final
class JsonArray(tuple[Any, ...]):
    """A read-only JSON array: a ``tuple`` of frozen JSON values, equal to an equal ``list`` too."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            other = tuple(other)
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"JsonArray({list(self)!r})"


def freeze(value: object, path: str = "payload") -> JsonValue:
    """*value* as a frozen JSON value; raise naming the *path* to the first bad part.

    Raises:
        TypeError: Something is not JSON (a set, bytes, an object, a non-str key).
        ValueError: A float is NaN or infinite, or a container holds itself.
    """
    try:
        return _freeze(value, path, set())
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply") from None


def _freeze(value: object, path: str, open_containers: set[int]) -> JsonValue:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        return value if type(value) is int else int.__int__(value)
    if isinstance(value, float):
        number = float.__float__(value)
        if not math.isfinite(number):
            raise ValueError(f"{path} must be a finite number, not {value!r}")
        return number
    if isinstance(value, (JsonObject, JsonArray)):
        return value  # frozen all the way down already
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in open_containers:
            raise ValueError(f"{path} contains itself")
        open_containers.add(id(value))
        try:
            if isinstance(value, Mapping):
                items = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise TypeError(
                            f"{path} must have str keys, not {type(key).__name__} ({key!r})"
                        )
                    key = str.__str__(key)
                    items[key] = _freeze(item, f"{path}[{key!r}]", open_containers)
                return JsonObject._of(items)
            return JsonArray(
                _freeze(item, f"{path}[{index}]", open_containers)
                for index, item in enumerate(value)
            )
        finally:
            open_containers.discard(id(value))
    raise TypeError(
        f"{path} must be a JSON value (dict, list, str, int, float, bool or None), "
        f"not {type(value).__name__}"
    )


def thaw(value: JsonValue) -> Any:
    """The plain JSON value of a frozen one: new ``dict`` and ``list`` objects all the way down."""
    if isinstance(value, JsonObject):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, JsonArray):
        return [thaw(item) for item in value]
    return value


def is_frozen(value: object) -> bool:
    """Whether *value* is a frozen JSON value of plain parts (unpickled ones may not be)."""
    if value is None or value is True or value is False:
        return True
    kind = type(value)
    if kind is str or kind is int:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if isinstance(value, JsonObject):
        return all(type(key) is str and is_frozen(item) for key, item in value.items())
    if isinstance(value, JsonArray):
        return all(is_frozen(item) for item in value)
    return False
