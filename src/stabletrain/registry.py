"""Registries: how models, data sources, tasks, distortions, perturbations, objectives and commands are found.

The core of stabletrain knows no extension by name. Everything that can be
named on the command line or in a checkpoint lives in a :class:`Registry`:

=================  =============================================================
registry           what a name gives
=================  =============================================================
``MODELS``         a model factory (``small_cnn``, ``jet_cnn``, ...)
``DATA``           a data-source loader, found by name or by a predicate on
                   the source string (a suffix, a folder)
``TASKS``          a :class:`~stabletrain.tasks.Task` class
``DISTORTIONS``    a distortion family of spec strings ``family-param``
``PERTURBATIONS``  a training perturbation (the ``x'`` of stability training)
``OBJECTIVES``     a training method, per task
``COMMANDS``       a ``stabletrain`` sub-command
``DEMOS``          a ``stabletrain demo --data NAME`` job
=================  =============================================================

An entry is an object or a lazy ``"package.module:attribute"`` string that is
imported on first use, so registering costs nothing and an extension's heavy
dependencies load only when its entries are used.

Extensions (stabletrain's own ``jets``, or any third-party package) fill the
registries from a package entry point::

    [project.entry-points."stabletrain.plugins"]
    mypkg = "mypkg.stabletrain_plugin:register"

``register()`` is called once, the first time a lookup misses, with no
arguments. A checkpoint stores the registry names it was built from, so
loading it in a fresh process finds the extension that provides them.

Options are checked against the factory's own signature: an unknown or
misspelled keyword is an error, never silently ignored.

>>> reg = Registry("widgets")
>>> @reg.register("box")
... def box(side: float = 1.0) -> float:
...     return side ** 2
>>> reg.build("box", side=3.0)
9.0
>>> reg.build("box", sied=3.0)
Traceback (most recent call last):
...
stabletrain.checks.StableTrainError: unknown option 'sied' for widgets 'box'; its options: side
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from importlib import metadata
from typing import Any, Callable, Generic, Iterator, TypeVar

from .checks import StableTrainError

__all__ = ["Registry", "load_plugins", "loaded_plugins", "factory_options", "check_options", "PLUGIN_GROUP",
           "MODELS", "DATA", "TASKS", "DISTORTIONS", "PERTURBATIONS", "OBJECTIVES", "COMMANDS", "DEMOS"]

log = logging.getLogger("stabletrain.registry")

#: The entry-point group that extensions declare.
PLUGIN_GROUP = "stabletrain.plugins"

T = TypeVar("T")

_plugins_lock = threading.RLock()  # a plugin that looks names up while registering must not deadlock
_plugins_loaded = False
_plugin_status: dict[str, str] = {}

#: Parameters of a factory that are objects handed in by code, never options of a config.
NON_OPTIONS = frozenset({"self", "task_loss", "perturbation", "attack", "validate"})


def load_plugins(force: bool = False) -> dict[str, str]:
    """Call every ``stabletrain.plugins`` entry point's ``register()`` once; returns ``{name: status}``.

    A plugin that fails to import (its optional dependencies missing, say)
    is logged and skipped: the rest of stabletrain keeps working, and a
    lookup of one of its names explains what is missing.
    """
    global _plugins_loaded
    with _plugins_lock:
        if _plugins_loaded and not force:
            return dict(_plugin_status)
        _plugins_loaded = True
        try:
            points = list(metadata.entry_points(group=PLUGIN_GROUP))
        except Exception as err:  # a broken distribution's metadata must not break the core
            log.warning("cannot list stabletrain plugins: %s", err)
            points = []
        for point in points:
            if point.name in _plugin_status and _plugin_status[point.name] == "loaded" and not force:
                continue
            try:
                register = point.load()
                register()
            except Exception as err:
                _plugin_status[point.name] = f"failed: {type(err).__name__}: {err}"
                log.warning("stabletrain plugin %r (%s) could not be loaded: %s", point.name, point.value, err)
            else:
                _plugin_status[point.name] = "loaded"
        return dict(_plugin_status)


def loaded_plugins() -> dict[str, str]:
    """The plugins seen so far and whether each loaded."""
    return dict(_plugin_status)


def _resolve(target: Any, where: str) -> Any:
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise StableTrainError(f"{where} needs module {module_name!r}, which cannot be imported ({err}); "
                               f"install the package that provides it") from None
    try:
        obj: Any = module
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise StableTrainError(f"{where}: {target!r} does not exist") from None
    return obj


def factory_options(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The keyword options a factory accepts (its signature, less code-only objects such as ``task_loss``).

    Example:
        >>> sorted(factory_options(lambda task_loss=None, alpha=1.0, sigma=0.1: None))
        ['alpha', 'sigma']
    """
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = inspect.signature(target).parameters
    return {name: p for name, p in params.items()
            if name not in NON_OPTIONS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _accepts_any(factory: Callable[..., Any]) -> bool:
    target = factory.__init__ if inspect.isclass(factory) else factory
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


def check_options(factory: Callable[..., Any], options: dict[str, Any], what: str) -> None:
    """Raise :class:`StableTrainError` if ``options`` names a keyword that ``factory`` does not take."""
    if _accepts_any(factory):
        return
    known = factory_options(factory)
    target = factory.__init__ if inspect.isclass(factory) else factory
    all_names = set(inspect.signature(target).parameters)
    unknown = [k for k in options if k not in all_names]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        listed = ", ".join(repr(k) for k in unknown)
        raise StableTrainError(f"unknown option{plural} {listed} for {what}; its options: "
                               f"{', '.join(known) or '(none)'}")


class Registry(Generic[T]):
    """Named entries of one kind; lookups load the extensions' entry points on a miss.

    Args:
        kind: what the entries are, for messages (``'model'``, ``'task'``...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._predicates: list[tuple[str, Callable[[str], bool]]] = []
        self._providers: dict[str, str] = {}

    def register(self, name: str, target: Any = None, *, predicate: Callable[[str], bool] | None = None,
                 override: bool = False) -> Any:
        """Add ``target`` (an object or a lazy ``'module:attr'`` string) as ``name``; usable as a decorator.

        ``predicate`` (data sources) claims source strings that are not the
        name itself, e.g. every path ending in ``.h5``. Registering a name
        twice with different targets is an error unless ``override``.
        """
        if not isinstance(name, str) or not name or any(c in name for c in ", \t\n"):
            raise StableTrainError(f"a {self.kind} name must be a non-empty string without spaces or commas, "
                                   f"got {name!r}")
        if target is None:
            def decorator(obj: Any) -> Any:
                self.register(name, obj, predicate=predicate, override=override)
                return obj
            return decorator
        current = self._entries.get(name)
        if current is not None and current is not target and current != target and not override:
            raise StableTrainError(f"{self.kind} {name!r} is already registered ({_describe(current)})")
        self._entries[name] = target
        self._providers[name] = _provider(target)
        if predicate is not None:
            self._predicates = [(n, p) for n, p in self._predicates if n != name] + [(name, predicate)]
        return target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests, and plugins that replace an entry)."""
        self._entries.pop(name, None)
        self._providers.pop(name, None)
        self._predicates = [(n, p) for n, p in self._predicates if n != name]

    def registered(self, name: str) -> bool:
        """Whether ``name`` is registered already, without loading plugins (for use inside ``register()``)."""
        return name in self._entries

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Every registered name, the extensions' included."""
        load_plugins()
        return sorted(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def provider(self, name: str) -> str:
        """The top-level module that registered ``name`` (what a checkpoint records)."""
        self.get(name)
        return self._providers.get(name, "")

    def get(self, name: str, *, needed_by: str | None = None, provider: str | None = None) -> T:
        """The entry ``name``, importing it if it is lazy; a miss is one clear error line."""
        if name not in self._entries:
            load_plugins()
        if name not in self._entries:
            where = f" (needed by {needed_by})" if needed_by else ""
            hint = ""
            if provider and provider.split(".")[0] != "stabletrain":
                hint = f"; it was provided by {provider!r}: install that package"
            elif provider:
                hint = f"; it was provided by {provider!r}, which did not load"
            failed = {k: v for k, v in _plugin_status.items() if v != "loaded"}
            if failed:
                hint += "; plugins that failed to load: " + ", ".join(f"{k} ({v})" for k, v in failed.items())
            raise StableTrainError(f"unknown {self.kind} {name!r}{where}; known: {', '.join(self.names()) or '(none)'}"
                                   f"{hint}")
        target = self._entries[name]
        if isinstance(target, str):
            target = _resolve(target, f"{self.kind} {name!r}")
            self._entries[name] = target
        return target

    def find(self, source: str) -> str | None:
        """The name whose entry claims ``source``: the name itself, else the first predicate that accepts it."""
        if source in self._entries:
            return source
        load_plugins()
        if source in self._entries:
            return source
        for name, predicate in self._predicates:
            try:
                if predicate(source):
                    return name
            except Exception:  # a predicate must not turn a lookup into a traceback
                continue
        return None

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword options of entry ``name`` (see :func:`factory_options`)."""
        return factory_options(self.get(name))

    def build(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Call entry ``name`` with ``options``, after checking them against its signature."""
        factory = self.get(name)
        check_options(factory, options, f"{self.kind} {name!r}")
        return factory(*args, **options)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", "?")
    return f"{module}.{getattr(target, '__qualname__', type(target).__name__)}"


def _provider(target: Any) -> str:
    module = target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", "") or ""
    parts = module.split(".")
    # stabletrain's own extensions are sub-packages; report them by their package (stabletrain.jets)
    return ".".join(parts[:2]) if parts[0] == "stabletrain" and len(parts) > 2 else parts[0]


MODELS: Registry = Registry("model")
DATA: Registry = Registry("data source")
TASKS: Registry = Registry("task")
DISTORTIONS: Registry = Registry("distortion family")
PERTURBATIONS: Registry = Registry("perturbation")
OBJECTIVES: Registry = Registry("method")
COMMANDS: Registry = Registry("command")
DEMOS: Registry = Registry("demo")
