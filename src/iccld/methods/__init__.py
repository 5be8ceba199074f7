"""Training objectives. Each is a :class:`~iccld.methods.base.Method` run by the one trainer.

:data:`METHODS` is the registry: ``method.name`` in a config picks the class, and the class declares
the rest (its config section, data streams, inference path, critic). Adding a method is one file and
one line here; see docs/adding-a-method.md. Nothing outside this package tests a method's name.
"""

from __future__ import annotations

from .base import (LABELLED_TARGET, SOURCE, TARGET, Critic, Method, MethodConfig, StepOutput,
                   cross_entropy)
from .stage1 import Stage1, Stage1Config
from .stage2 import Stage2, Stage2Config
from .supervised import Oracle, SourceOnly

METHODS: dict[str, type[Method]] = {}
DEFAULT_METHOD = Stage1.name  # what a config without ``method.name`` trains


def register(cls: type[Method]) -> type[Method]:
    """Add a method under its ``name`` (also usable as a class decorator); the name must be new."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__}: a method needs a class attribute `name`")
    if METHODS.get(cls.name, cls) is not cls:
        raise ValueError(f"method '{cls.name}' is already registered ({METHODS[cls.name].__name__})")
    METHODS[cls.name] = cls
    return cls


for _method in (SourceOnly, Stage1, Stage2, Oracle):
    register(_method)


def method_class(name: str) -> type[Method]:
    """The registered class of ``name``; ConfigError listing the choices otherwise."""
    if name not in METHODS:
        from .base import one_of

        one_of("method.name", name, tuple(METHODS))
    return METHODS[name]


def build_method(config) -> Method:
    """Config -> method with its networks (``config.method`` is that method's ``Config``)."""
    return method_class(config.method.name).from_config(config)


__all__ = ["METHODS", "DEFAULT_METHOD", "register", "method_class", "build_method", "Method", "MethodConfig",
           "StepOutput", "Critic", "cross_entropy", "SOURCE", "TARGET", "LABELLED_TARGET", "SourceOnly",
           "Oracle", "Stage1", "Stage1Config", "Stage2", "Stage2Config"]
