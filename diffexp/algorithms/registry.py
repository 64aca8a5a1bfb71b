"""Algorithms by name: each is a config class and a Lightning module class.

The built-in ones (``ddpo``, ``grpo``, ``alignprop``) register themselves in their own modules with
:func:`register_algorithm`; a plugin registers its own the same way. Adding an algorithm is one
module (its config, beside its module subclassing ``RewardFinetuningModule``) and one decorator.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffexp.registry import Registry

#: modules of the built-in algorithms, imported on the first lookup (they import this module)
BUILTIN_MODULES = ("diffexp.algorithms.ddpo", "diffexp.algorithms.grpo", "diffexp.algorithms.alignprop")


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_class: type
    module_class: type


ALGORITHMS: Registry[Algorithm] = Registry("algorithm", builtin_modules=BUILTIN_MODULES)


def register_algorithm(name: str, config_class: type, *, label: str | None = None, order: float | None = None):
    """Class decorator registering a module class and its config class under ``name``; the config
    class's ``algorithm`` field must default to ``name``; ``label`` and ``order`` are how reports
    name and place it."""

    def decorate(module_class):
        default = config_class.model_fields["algorithm"].default if "algorithm" in config_class.model_fields else None
        if default != name:
            raise ValueError(
                f"algorithm {name!r}: {config_class.__name__}.algorithm must default to {name!r}, not {default!r}"
            )
        ALGORITHMS.register(name, Algorithm(name, config_class, module_class), label=label, order=order)
        return module_class

    return decorate


def algorithm_names() -> list[str]:
    return ALGORITHMS.names()


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm ``name`` (:class:`~diffexp.registry.UnknownNameError` otherwise;
    a config names only registered ones, see ``config_class``)."""
    return ALGORITHMS[name]
