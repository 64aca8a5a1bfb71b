"""Plugins: packages that add worlds, algorithms, rewards, prompt sets, evaluators or commands
through the registries, without the library importing them.

A plugin is a module named by an entry point in the ``diffexp.plugins`` group (``pyproject.toml``:
``[project.entry-points."diffexp.plugins"] my_world = "my_package.plugin"``); importing it
registers what it provides. Every registry calls :func:`load_plugins` before a lookup, so a
plugin is imported the first time anything is looked up by name. The embedded world is one.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

GROUP = "diffexp.plugins"
_loaded = False


class PluginError(RuntimeError):
    """A plugin that failed to import; the message names its entry point."""


def load_plugins() -> None:
    """Import every installed plugin, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in entry_points(group=GROUP):
        try:
            entry.load()
        except Exception as err:
            raise PluginError(f"diffexp plugin {entry.name!r} ({entry.value}) failed to load: {err}") from err


#: component name (a pipeline, a reward) -> a function returning a short hash of its weights
FINGERPRINTS: dict[str, Callable[[], str]] = {}


def register_fingerprint(name: str, fingerprint: Callable[[], str]) -> None:
    """Say how to fingerprint the weights behind ``name`` (a registered pipeline or reward): a
    run's config hash includes it, so results of other weights are never taken for these."""
    FINGERPRINTS[name] = fingerprint


def fingerprints(names) -> dict[str, str]:
    """The fingerprints of the named components that have one."""
    load_plugins()
    return {name: FINGERPRINTS[name]() for name in dict.fromkeys(names) if name in FINGERPRINTS}
