"""The method registry: ``config.method`` → a :class:`~consistency.methods.base.Method`.

Every method lives in ``consistency/methods/<name>.py`` and exposes ``make(config, dataset) -> Method``, with what
the rest of the code reads about it as module-level declarations: its config block (``CONFIG_BLOCK``,
``CONFIG_FIELDS``), its teacher use (``TEACHER_USE``), data extras (``DATA_EXTRAS``), its CM sampling boundary
(``sampling_boundary``), whether its student may outgrow its teacher's resolution (``GROWS_RESOLUTION``) and its
cross-field rules (``validate_config``); see docs/architecture.md "Adding a method". Code outside the
package (a research fork, the tests) adds methods with :func:`register` without editing this file.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

from consistency.core.errors import ConfigError
from consistency.methods.base import Method

MakeFn = Callable[..., Method]

# Methods registered at run time (name → make(config, dataset)); they take precedence over package modules.
_REGISTERED: dict[str, MakeFn] = {}
# Modules and folders of this package that are not methods (the contract, shared pieces).
_NOT_METHODS = ("base", "spec", "components")


def register(name: str, make_fn: MakeFn) -> None:
    """Make ``config.method = name`` build its method with ``make_fn(config, dataset)``."""
    if not name or not name.isidentifier():
        raise ValueError(f"method name must be a Python identifier, got {name!r}")
    _REGISTERED[name] = make_fn


def import_modules(names) -> None:
    """Import the modules named by ``--imports`` (each may :func:`register` methods); a missing one is a
    :class:`ConfigError` naming the flag."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:   # the module exists but one of its own imports is missing: a real bug
                raise
            raise ConfigError(f"--imports: no module named {name!r}; put it on PYTHONPATH") from None


def is_registered(name: str) -> bool:
    """True for names added with :func:`register` (not the package's own modules)."""
    return name in _REGISTERED


def available() -> tuple[str, ...]:
    """Every method name ``config.method`` accepts: the package's method modules plus those added with
    :func:`register` (the single source of ``consistency.config.METHODS``)."""
    import pkgutil
    here = os.path.dirname(__file__)
    package = tuple(sorted(m.name for m in pkgutil.iter_modules([here]) if m.name not in _NOT_METHODS))
    return package + tuple(sorted(n for n in _REGISTERED if n not in package))


def module_of(name: str):
    """The package module of method ``name``, whose module-level declarations the config reads (``CONFIG_BLOCK``
    and ``CONFIG_FIELDS``, ``TEACHER_USE``, ``DATA_EXTRAS``, ``sampling_boundary``, ``GROWS_RESOLUTION``,
    ``validate_config``); None for
    methods added with :func:`register` and for names that are no method module."""
    if name in _REGISTERED or not name or not name.isidentifier() or name in _NOT_METHODS:
        return None
    module_name = f"{__name__}.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # the method exists but one of its own imports is missing: a real bug
            raise
        return None


def get_make_fn(name: str) -> MakeFn:
    """The ``make`` function of method ``name``; ConfigError (naming config.method) if there is none."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    module_name = f"{__name__}.{name}"
    if not name or not name.isidentifier() or name in _NOT_METHODS:
        raise ConfigError(f"config.method: unknown method {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # the method exists but one of its own imports is missing: a real bug
            raise
        raise ConfigError(f"config.method: method {name!r} is not implemented (no module {module_name})") from None
    make = getattr(module, "make", None)
    if make is None:
        raise ConfigError(f"config.method: module {module_name} defines no make(config, dataset)")
    return make


def get_method(config, dataset) -> Method:
    """Build the method named by ``config.method`` for ``dataset``."""
    return get_make_fn(config.method)(config, dataset)
