"""Models named by spec: a registered name, ``timm:NAME``, ``torchvision:NAME``, ``file.py:factory`` or ``pkg.mod:factory``.

``embed:SPEC`` is the model of ``SPEC`` used as an embedder of its pooled
penultimate features (:class:`~stabletrain.models.Embedder`); the
similarity task trains ``embed:`` models.

Every spec resolves to a *factory*: a callable that takes the keyword
arguments a checkpoint stores (``in_channels``, ``num_classes``, ``mean``,
``std`` and the model's own options) and returns a model that takes
``B×C×H×W`` images in [0, 1]. Normalization lives inside the model:

* registered models (``small_cnn``) normalize with the training data's
  statistics, as before;
* ``timm:`` models use the mean and std of their pretrained config
  (``model.pretrained_cfg``), ``torchvision:`` models the ImageNet
  statistics their weights were trained with, unless ``mean``/``std`` are
  given;
* a user's factory (``file.py:factory``, ``pkg.mod:factory``) returns a
  module that expects normalized inputs; it is wrapped with the data's
  statistics, or ``mean``/``std`` when given. A factory that already takes
  [0, 1] images declares ``stabletrain_normalized = True`` on itself.

Keyword arguments pass through to ``timm.create_model`` and
``torchvision.models.get_model`` (``drop_rate``, ``drop_path_rate``, …),
exactly as timm's own ``create_model`` passes them to the model class.

Example:
    >>> factory = model_factory("small_cnn")
    >>> factory(in_channels=1, num_classes=3, width=4)(torch.rand(2, 1, 16, 16)).shape
    torch.Size([2, 3])
    >>> parse_model_spec("timm:resnet18")
    ModelSpec(kind='timm', target='resnet18', attribute=None)
    >>> parse_model_spec("my_models.py:build").kind
    'file'
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..checks import StableTrainError
from ..registry import MODELS

__all__ = ["ModelSpec", "parse_model_spec", "model_factory", "spec_source", "check_spec_source", "file_sha256",
           "IMAGENET_MEAN", "IMAGENET_STD", "SPEC_KINDS", "uses_data_statistics", "VISION_INSTALL"]

logger = logging.getLogger(__name__)

#: The ImageNet channel statistics that torchvision's weights (and most of timm's) were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The kinds of spec :func:`parse_model_spec` recognizes.
SPEC_KINDS = ("registered", "timm", "torchvision", "file", "module")
#: How to install the optional model libraries.
VISION_INSTALL = "pip install 'stabletrain[vision]' (timm and torchvision)"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: its kind, the name or module it points at, and the factory attribute."""

    kind: str
    target: str
    attribute: str | None = None


def parse_model_spec(spec: str) -> ModelSpec:
    """Split a model spec into kind, target and attribute (see the module docstring).

    Example:
        >>> parse_model_spec("torchvision:resnet18")
        ModelSpec(kind='torchvision', target='resnet18', attribute=None)
        >>> parse_model_spec("my_pkg.models:wide_net")
        ModelSpec(kind='module', target='my_pkg.models', attribute='wide_net')
    """
    if not isinstance(spec, str) or not spec.strip():
        raise StableTrainError(f"a model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec.startswith("embed:"):
        return parse_model_spec(spec[len("embed:"):])
    for kind in ("timm", "torchvision"):
        if spec.startswith(kind + ":"):
            name = spec[len(kind) + 1:]
            if not name:
                raise StableTrainError(f"model spec {spec!r} names no {kind} model (write {kind}:NAME)")
            return ModelSpec(kind, name)
    if ":" in spec:
        target, _, attribute = spec.rpartition(":")
        if not target or not attribute.isidentifier():
            raise StableTrainError(f"model spec {spec!r} must end in ':factory', a Python name")
        if target.endswith(".py") or "/" in target or "\\" in target:
            return ModelSpec("file", target, attribute)
        if all(part.isidentifier() for part in target.split(".")):
            return ModelSpec("module", target, attribute)
        raise StableTrainError(f"model spec {spec!r}: {target!r} is neither a .py file nor a Python module path")
    return ModelSpec("registered", spec)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def spec_source(spec: str) -> dict[str, str] | None:
    """What a checkpoint records about where a ``file.py:factory`` model came from: the path and its hash."""
    parsed = parse_model_spec(spec)
    if parsed.kind != "file":
        return None
    path = Path(parsed.target).expanduser().resolve()
    if not path.is_file():
        raise StableTrainError(f"model file not found: {parsed.target}")
    return {"file": str(path), "sha256": file_sha256(path)}


def check_spec_source(spec: str, source: dict | None, where: str) -> list[str]:
    """Compare a stored ``file.py`` source with the file as it is now; returns warning lines (empty if unchanged)."""
    if not source or "file" not in source:
        return []
    path = Path(source["file"])
    if not path.is_file():
        raise StableTrainError(f"{where} was built by {spec!r} from {path}, which no longer exists")
    now = file_sha256(path)
    if now != source.get("sha256"):
        return [f"model file {path} changed since {where} was written (sha256 {str(source.get('sha256'))[:12]}… "
                f"then, {now[:12]}… now); the model is rebuilt from the file as it is now"]
    return []


# -- the wrappers -----------------------------------------------------------------------------------------------------


def _stats(values: Sequence[float] | None, default: Sequence[float], channels: int, what: str) -> list[float]:
    stats = list(default if values is None else values)
    if len(stats) == 1 and channels > 1:
        stats = stats * channels
    if len(stats) != channels:
        raise StableTrainError(f"{what} needs {channels} value(s), one per channel of the model's input, got {stats}")
    return [float(v) for v in stats]


def _backbone_channels(in_channels: int, native: int = 3) -> int:
    """Grayscale inputs are repeated to the ``native`` channels of a pretrained backbone."""
    return native if in_channels == 1 else in_channels


class _LibraryFactory:
    """The factory of ``timm:NAME`` or ``torchvision:NAME``; its keyword arguments pass through to the library."""

    normalization = "pretrained"

    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.spec = f"{kind}:{name}"
        self.module = _import_library(kind)
        known = self._names()
        if name not in known:
            from difflib import get_close_matches

            close = get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise StableTrainError(f"{kind} has no model {name!r}{hint}")

    def _names(self) -> list[str]:
        if self.kind == "timm":
            return list(self.module.list_models())
        return list(self.module.models.list_models())

    def __call__(self, in_channels: int = 3, num_classes: int = 1000, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, **kwargs: Any) -> nn.Module:
        from .wrap import NormalizedClassifier

        channels = _backbone_channels(in_channels)
        try:
            if self.kind == "timm":
                model = self.module.create_model(self.name, pretrained=False, num_classes=num_classes,
                                                 in_chans=channels, **kwargs)
                cfg = dict(getattr(model, "pretrained_cfg", None) or {})
                default_mean, default_std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
            else:
                if channels != 3:
                    raise StableTrainError(f"torchvision models take 1 or 3 input channels, not {in_channels}")
                model = self.module.models.get_model(self.name, weights=None, num_classes=num_classes, **kwargs)
                default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
        except StableTrainError:
            raise
        except TypeError as err:
            raise StableTrainError(f"model {self.spec!r} does not take these options ({err})") from None
        except (ValueError, RuntimeError, AssertionError, KeyError) as err:
            raise StableTrainError(f"model {self.spec!r} could not be built: {type(err).__name__}: {err}") from None
        if len(default_mean) != channels:
            default_mean = [sum(default_mean) / len(default_mean)] * channels
            default_std = [sum(default_std) / len(default_std)] * channels
        return NormalizedClassifier(model, _stats(mean, default_mean, channels, "mean"),
                                    _stats(std, default_std, channels, "std"), in_channels=in_channels)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.__call__)

    def __repr__(self) -> str:
        return f"<model factory {self.spec}>"


def _import_library(kind: str) -> Any:
    try:
        if kind == "timm":
            return importlib.import_module("timm")
        return importlib.import_module("torchvision")
    except ImportError as err:
        raise StableTrainError(f"{kind}: models need the {kind} package ({VISION_INSTALL}); "
                               f"importing it failed: {err}") from None
    except (OSError, RuntimeError) as err:  # e.g. torchvision built for another torch
        raise StableTrainError(f"{kind} is installed but does not import beside torch {torch.__version__}: "
                               f"{str(err).splitlines()[0]}") from None


class _UserFactory:
    """A user's ``file.py:factory`` or ``pkg.mod:factory``: called with the options it takes, wrapped to take [0, 1]."""

    normalization = "data"

    def __init__(self, spec: str, function: Callable[..., Any]) -> None:
        self.spec, self.function = spec, function
        if getattr(function, "stabletrain_normalized", False):
            self.normalization = "model"
        params = inspect.signature(function).parameters
        self._takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self._params = set(params)

    def __call__(self, in_channels: int = 3, num_classes: int = 10, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, **kwargs: Any) -> nn.Module:
        from .wrap import NormalizedClassifier

        supplied = {"in_channels": in_channels, "num_classes": num_classes}
        call = {k: v for k, v in supplied.items() if self._takes_any or k in self._params}
        unknown = [k for k in kwargs if not (self._takes_any or k in self._params)]
        if unknown:
            raise StableTrainError(f"unknown option(s) {', '.join(map(repr, unknown))} for model {self.spec!r}; its "
                                   f"options: {', '.join(sorted(self._params - set(supplied))) or '(none)'}")
        try:
            model = self.function(**call, **kwargs)
        except StableTrainError:
            raise
        except Exception as err:  # the user's code: any failure is one line naming it
            raise StableTrainError(f"model factory {self.spec!r} raised {type(err).__name__}: {err}") from None
        if not isinstance(model, nn.Module):
            raise StableTrainError(f"model factory {self.spec!r} returned {type(model).__name__}, not a torch "
                                   f"nn.Module")
        if self.normalization == "model":
            return model
        if mean is None or std is None:
            raise StableTrainError(f"model {self.spec!r} needs the input mean and std (from the data, or --mean "
                                   f"and --std)")
        return NormalizedClassifier(model, _stats(mean, mean, in_channels, "mean"),
                                    _stats(std, std, in_channels, "std"), in_channels=in_channels)

    @property
    def __signature__(self) -> inspect.Signature:
        own = [p for name, p in inspect.signature(self.function).parameters.items()
               if name not in ("in_channels", "num_classes", "mean", "std") and p.kind is not p.VAR_POSITIONAL]
        head = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default) for name, default in
                (("in_channels", 3), ("num_classes", 10), ("mean", None), ("std", None))]
        kw_only = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is not p.VAR_KEYWORD else p for p in own]
        kw_only.sort(key=lambda p: p.kind is p.VAR_KEYWORD)
        return inspect.Signature(head + kw_only)

    def __repr__(self) -> str:
        return f"<model factory {self.spec}>"


def _load_file(target: str, spec: str) -> Any:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise StableTrainError(f"model file not found: {target} (from model spec {spec!r})")
    name = "stabletrain_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise StableTrainError(f"cannot import {path} as Python (model spec {spec!r})")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # so that pickling by reference and dataclasses inside it work
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # the user's file: one line, naming it
        sys.modules.pop(name, None)
        raise StableTrainError(f"importing {path} failed: {type(err).__name__}: {err}") from None
    return module


def _load_module(target: str, spec: str) -> Any:
    try:
        return importlib.import_module(target)
    except ImportError as err:
        raise StableTrainError(f"cannot import module {target!r} of model spec {spec!r}: {err}") from None
    except Exception as err:
        raise StableTrainError(f"importing {target!r} failed: {type(err).__name__}: {err}") from None


_FACTORIES: dict[str, Any] = {}


class _EmbedderFactory:
    """``embed:SPEC``: the model of ``SPEC`` as an :class:`~stabletrain.models.Embedder` of its pooled features."""

    def __init__(self, spec: str, inner: Callable[..., nn.Module]) -> None:
        self.spec, self.inner = spec, inner
        self.normalization = getattr(inner, "normalization", "data")

    def __call__(self, embedding_dim: int | None = None, l2_normalize: bool = True, **kwargs: Any) -> nn.Module:
        from . import Embedder

        return Embedder(self.inner(**kwargs), embedding_dim=embedding_dim, l2_normalize=l2_normalize)

    @property
    def __signature__(self) -> inspect.Signature:
        inner = inspect.signature(self.inner)
        own = [inspect.Parameter("embedding_dim", inspect.Parameter.KEYWORD_ONLY, default=None),
               inspect.Parameter("l2_normalize", inspect.Parameter.KEYWORD_ONLY, default=True)]
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is p.POSITIONAL_OR_KEYWORD else p
                for p in inner.parameters.values() if p.kind is not p.VAR_POSITIONAL]
        rest.sort(key=lambda p: p.kind is p.VAR_KEYWORD)
        return inspect.Signature(own + rest)

    def __repr__(self) -> str:
        return f"<model factory {self.spec}>"


def model_factory(spec: str, *, needed_by: str | None = None, provider: str | None = None) -> Callable[..., nn.Module]:
    """The factory a model spec names (see the module docstring); a spec that names nothing is one clear error.

    Example:
        >>> model_factory("no_such_model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stabletrain.checks.StableTrainError: unknown model 'no_such_model'; known: ...small_cnn...; or a spec timm:NAME, torchvision:NAME, path/to/file.py:factory, package.module:factory
    """
    if isinstance(spec, str) and spec.strip().startswith("embed:"):
        inner_spec = spec.strip()[len("embed:"):]
        return _EmbedderFactory(spec.strip(), model_factory(inner_spec, needed_by=needed_by, provider=provider))
    parsed = parse_model_spec(spec)
    if parsed.kind == "registered":
        try:
            return MODELS.get(parsed.target, needed_by=needed_by, provider=provider)
        except StableTrainError as err:
            raise StableTrainError(f"{err}; or a spec timm:NAME, torchvision:NAME, path/to/file.py:factory, "
                                   f"package.module:factory") from None
    if parsed.kind in ("timm", "torchvision"):
        key = spec.strip()
        if key not in _FACTORIES:
            _FACTORIES[key] = _LibraryFactory(parsed.kind, parsed.target)
        return _FACTORIES[key]
    key = spec.strip()
    if parsed.kind == "file":
        path = Path(parsed.target).expanduser().resolve()
        key = f"{path}:{parsed.attribute}@{path.stat().st_mtime_ns if path.is_file() else 'missing'}"
    if key in _FACTORIES:
        return _FACTORIES[key]
    module = _load_file(parsed.target, spec) if parsed.kind == "file" else _load_module(parsed.target, spec)
    function = getattr(module, parsed.attribute or "", None)
    if function is None:
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:8]
        raise StableTrainError(f"{parsed.target} has no {parsed.attribute!r} (model spec {spec!r}); it defines "
                               f"{', '.join(found) or 'no public callables'}")
    if not callable(function):
        raise StableTrainError(f"{parsed.target}:{parsed.attribute} is not callable (model spec {spec!r})")
    _FACTORIES[key] = _UserFactory(spec.strip(), function)
    return _FACTORIES[key]


def uses_data_statistics(factory: Callable[..., Any]) -> bool:
    """Whether a factory normalizes with the training data's statistics (registered and user models) or
    with its own (``timm:``/``torchvision:`` pretrained configs, or a factory that normalizes itself)."""
    return getattr(factory, "normalization", "data") == "data"
