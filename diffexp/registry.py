"""One registry type for everything the library finds by name: pipelines, prompt sets, rewards,
evaluators, exploration strategies and algorithms.

A registration carries what reports show for it (a label, a colour, its place in tables and
legends) and whatever else its registry's users need (``extra``, e.g. a reward's ground-truth
metric). Built-ins register the way plugins do; every lookup first imports the registry's
built-in modules and the installed plugins, so a name is found wherever it was registered.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from diffexp.plugins import load_plugins

T = TypeVar("T")
_UNSET: Any = object()


class UnknownNameError(ValueError):
    """A name nothing is registered under; the message lists the registered names."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    label: str
    colour: str | None = None
    order: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Names -> registered objects, read like a mapping (``name in r``, ``r[name]``, ``list(r)``)."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()):
        self.kind = kind
        self.builtin_modules = builtin_modules
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        value: T = _UNSET,
        *,
        label: str | None = None,
        colour: str | None = None,
        order: float | None = None,
        **extra: Any,
    ):
        """Register ``value`` under ``name`` (or decorate: ``@r.register("name", label=...)``).
        ``order`` places it in tables and legends (default: after everything registered before)."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            place = len(self._entries) if order is None else order
            self._entries[name] = Entry(name, obj, label or name, colour, place, dict(extra))
            return obj

        return decorate if value is _UNSET else decorate(value)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a test's or a plugin's clean-up); unknown names are ignored."""
        self._entries.pop(name, None)

    def load(self) -> None:
        for module in self.builtin_modules:
            importlib.import_module(module)
        load_plugins()

    def entry(self, name: str) -> Entry[T]:
        self.load()
        if name not in self._entries:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}")
        return self._entries[name]

    def entries(self) -> list[Entry[T]]:
        """Every registration in display order."""
        self.load()
        return sorted(self._entries.values(), key=lambda e: (e.order, e.name))

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """``name`` if it is registered, else :class:`UnknownNameError` (a ``ValueError``, so a
        pydantic validator can return this)."""
        self.entry(name)
        return name

    def label(self, name: str) -> str:
        """The registered label; an unregistered name stands for itself (a report of a plugin's
        runs read without the plugin)."""
        self.load()
        return self._entries[name].label if name in self._entries else name

    def __getitem__(self, name: str) -> T:
        return self.entry(name).value

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load()
        return len(self._entries)
