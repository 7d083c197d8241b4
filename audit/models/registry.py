"""The model registry: names → builders for any input shape and number of classes; users' models as module:function."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from audit.errors import UsageError
from audit.models.architecture import describe, source_of
from audit.models.zoo import MLP_PATTERN, alexnet_small, inception_small, inception_v3, mlp
from audit.registry import Registry, origin_of


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build: Callable[..., nn.Module]
    source: dict[str, str] | None = None  # a user's or plugin's model: where its factory is defined (hashed)


def _mlp_entry(name: str) -> ModelEntry:
    depth, width = (int(g) for g in MLP_PATTERN.match(name).groups())  # type: ignore[union-attr]
    if not 1 <= depth <= 64 or not 1 <= width <= 65536:
        raise UsageError(f"model '{name}': depth must lie in 1..64 and width in 1..65536")
    return ModelEntry(
        name, f"MLP, {depth} hidden ReLU layer{'s' * (depth > 1)} of {width}, biases",
        lambda input_shape, num_classes, dropout=0.0, batchnorm=True: mlp(
            input_shape, num_classes, depth, width, dropout))


def _imported_entry(name: str) -> ModelEntry:
    """A user's model as `module:function`; the function returns an nn.Module, and takes input_shape and
    num_classes as keyword arguments if it declares them."""
    module_name, _, function_name = name.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, function_name)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"cannot load model '{name}': {err}; the module must be importable from the "
                         "current directory or PYTHONPATH") from None
    except Exception as err:  # the user's module raised while importing (a SyntaxError, anything): its error
        raise UsageError(f"cannot load model '{name}': importing {module_name} raised {type(err).__name__}: "
                         f"{err}") from None
    if not callable(function):
        raise UsageError(f"model '{name}' names a {type(function).__name__}, not a function returning a "
                         "torch.nn.Module")
    return ModelEntry(name, f"user model {name}", _user_build(name, function), factory_source(function, module))


def factory_source(function: Callable[..., nn.Module], module: Any = None) -> dict[str, str] | None:
    """The source that defines a factory, hashed (None when it has no file: a builtin, a REPL function)."""
    try:
        file = inspect.getsourcefile(function) or getattr(module, "__file__", None)
    except TypeError:
        file = getattr(module, "__file__", None)
    if file is None:
        return None
    return source_of(file, getattr(function, "__module__", None) or getattr(module, "__name__", ""))


def _user_build(name: str, function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """The builder of a user's model function: it gets input_shape and num_classes if it declares them."""
    try:
        accepted = set(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: called without arguments
        accepted = set()

    def build(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.0, batchnorm: bool = True) -> nn.Module:
        given = {"input_shape": input_shape, "num_classes": num_classes}
        model = function(**{k: v for k, v in given.items() if k in accepted})
        if not isinstance(model, nn.Module):
            raise UsageError(f"model '{name}' returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return build


def register_model(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register fn(input_shape, num_classes) -> nn.Module as a named model (a plugin's own architecture); it
    takes either argument only if it declares it."""

    def register(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(name, ModelEntry(name, description, _user_build(name, function), factory_source(function)),
                   origin=origin_of(function, 2))
        return function

    return register


def model_entry(name: str) -> ModelEntry:
    """The registered model, an mlp-DxW, or a user's module:function (imported now)."""
    return MODELS.get(name)


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, *, dropout: float = 0.0,
                batchnorm: bool = True, seed: int | None = None) -> nn.Module:
    """A fresh model; with a seed, its initialization is drawn from that seed alone."""
    entry = model_entry(name)
    if seed is None:
        return materialized(entry.build(input_shape, num_classes, dropout=dropout, batchnorm=batchnorm), input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return materialized(entry.build(input_shape, num_classes, dropout=dropout, batchnorm=batchnorm), input_shape)


def materialized(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A model with lazy modules (nn.LazyLinear, ...) given its shapes by one forward pass of a zero batch, in
    eval mode (batch norm statistics untouched), so that its initial weights exist to be saved."""
    if not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters()):
        return model
    training = model.training
    with torch.no_grad():
        model.eval()(torch.zeros(2, *input_shape))
    return model.train(training)


def architecture(name: str, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """The architecture record of a run's freshly built model (see audit.models.architecture)."""
    return {**describe(model, model_entry(name).source), "input_shape": list(input_shape), "num_classes": num_classes}


def current_architecture(name: str, recorded: dict[str, Any], *, dropout: float = 0.0,
                         batchnorm: bool = True) -> dict[str, Any]:
    """Today's architecture of the model a run recorded, built for the run's recorded input shape and classes."""
    shape, classes = tuple(recorded["input_shape"]), int(recorded["num_classes"])
    model = build_model(name, shape, classes, dropout=dropout, batchnorm=batchnorm, seed=0)
    return architecture(name, model, shape, classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODELS = Registry("model")
for _name in ("mlp-1x512", "mlp-3x512"):
    MODELS.add(_name, _mlp_entry(_name))
MODELS.add("alexnet-small", ModelEntry(
    "alexnet-small", "small AlexNet: 2 × [conv 5×5 64, max pool 3×3/2, LRN], FC 384, FC 192",
    lambda input_shape, num_classes, dropout=0.0, batchnorm=True: alexnet_small(input_shape, num_classes, dropout)))
MODELS.add("inception-small", ModelEntry(
    "inception-small", "small Inception with batch norm (batchnorm=false gives inception-small-nobn)",
    lambda input_shape, num_classes, dropout=0.0, batchnorm=True: inception_small(
        input_shape, num_classes, dropout, batchnorm)))
MODELS.add("inception-small-nobn", ModelEntry(
    "inception-small-nobn", "small Inception without batch norm (conv biases instead)",
    lambda input_shape, num_classes, dropout=0.0, batchnorm=True: inception_small(
        input_shape, num_classes, dropout, batchnorm=False)))
MODELS.add("inception-v3", ModelEntry(
    "inception-v3", "torchvision's Inception v3 (23.8M parameters at 1000 classes), RGB images ≥ 75×75, the "
    "paper's ImageNet model", inception_v3))
MODELS.pattern("mlp-DxW", lambda name: _mlp_entry(name) if MLP_PATTERN.match(name) else None,
               description="MLP of any depth D and width W")
MODELS.pattern("module:function", lambda name: _imported_entry(name) if ":" in name else None,
               description="your model: a function in an importable module returning a torch.nn.Module")
