"""The methods, looked up by name: the one place that lists them (as onnxruntime's quantization registry maps
operator types to their quantizer classes). Stages ask `method(action.method)` instead of comparing names."""
from __future__ import annotations

from graphopt.errors import GraphoptError
from graphopt.methods.action import Action
from graphopt.methods.basis import BasisMethod
from graphopt.methods.blocks import BlocksMethod
from graphopt.methods.filters import FiltersMethod
from graphopt.methods.method import Method

_REGISTRY: dict[str, Method] = {}


def register(entry: Method) -> Method:
    """Add a method (a plug-in: its module defines it, this call makes the search offer it)."""
    if entry.name in _REGISTRY:
        raise GraphoptError(f"a method named {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a method registered at run time (a plug-in's tests clean up after themselves)."""
    _REGISTRY.pop(name, None)


def method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise GraphoptError(f"unknown method {name!r}: choose from {', '.join(_REGISTRY)}") from None


def methods() -> list[Method]:
    """Every method, in the order plans list their cuts."""
    return list(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def default_names() -> tuple[str, ...]:
    """The methods searched without --methods."""
    return tuple(m.name for m in _REGISTRY.values() if m.default)


def counts(actions: list[Action]) -> dict[str, int]:
    """How many of `actions` each method made, for every method (0 where none)."""
    return {name: sum(a.method == name for a in actions) for name in _REGISTRY}


def describe(actions: list[Action]) -> str:
    """The candidates of every method searched, counted: '12 droppable blocks, 30 channel cuts'."""
    return ", ".join(f"{count} {method(name).counted}" for name, count in counts(actions).items()) or "no cuts"


for _entry in (BlocksMethod(), FiltersMethod(), BasisMethod()):
    register(_entry)
