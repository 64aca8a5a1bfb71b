"""Algorithms by name: each is a config class and a Lightning module class.

The built-in ones (``ddpo``, ``grpo``, ``alignprop``) register themselves in their own modules with
:func:`register_algorithm`; a plugin registers its own the same way. Adding an algorithm is one
module (its config, beside its module subclassing ``RewardFinetuningModule``) and one decorator.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from diffexp.plugins import load_plugins

#: modules of the built-in algorithms, imported on the first lookup (they import this module)
BUILTIN_MODULES = ("diffexp.algorithms.ddpo", "diffexp.algorithms.grpo", "diffexp.algorithms.alignprop")


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_class: type
    module_class: type


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, config_class: type):
    """Class decorator registering a module class and its config class under ``name``; the config
    class's ``algorithm`` field must default to ``name``."""

    def decorate(module_class):
        if name in ALGORITHMS:
            raise ValueError(f"algorithm {name!r} is already registered")
        default = config_class.model_fields["algorithm"].default if "algorithm" in config_class.model_fields else None
        if default != name:
            raise ValueError(
                f"algorithm {name!r}: {config_class.__name__}.algorithm must default to {name!r}, not {default!r}"
            )
        ALGORITHMS[name] = Algorithm(name, config_class, module_class)
        return module_class

    return decorate


def _load() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    load_plugins()


def algorithm_names() -> list[str]:
    _load()
    return sorted(ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    _load()
    if name not in ALGORITHMS:
        from diffexp.algorithms.config import ConfigError

        raise ConfigError(f"algorithm: unknown algorithm {name!r}; registered: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]
