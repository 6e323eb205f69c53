"""Typed values: dataclasses, pydantic models and registered types to and from JSON.

Storage stays JSON. A value is encoded by :func:`to_json` (the ``default``
hook of ``json.dumps``) and decoded back by :func:`decode_as` into an
annotated type: a step function's return annotation (:func:`step_result`) or
a workflow function's parameter annotations (:func:`workflow_inputs`).

Supported out of the box: dataclasses (nested, and ``list``/``tuple``/``dict``
/``Optional``/``Union`` of them), pydantic models (when pydantic is installed;
it is imported lazily and never required) and plain JSON types. Anything else
is registered with :func:`register_type`. An annotation that is missing, or
cannot be resolved, leaves the value as decoded JSON.
"""

from __future__ import annotations

import dataclasses
from collections import abc
import sys
import types
import typing
from typing import Any, Callable, Protocol, TypeVar, Union

from .errors import TypedValueError

T = TypeVar("T")


class Serializer(Protocol[T]):
    """How one application type becomes JSON and back (see :func:`register_type`)."""

    def encode(self, value: T) -> Any:
        """A JSON value (dicts, lists, strings, numbers, booleans, None) for ``value``."""

    def decode(self, data: Any) -> T:
        """The value that :meth:`encode` turned into ``data``."""


@dataclasses.dataclass(frozen=True)
class _Codec:
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


_SERIALIZERS: dict[type, _Codec] = {}


def register_type(cls: type[T], encode: Callable[[T], Any], decode: Callable[[Any], T]) -> None:
    """Store values of ``cls`` as ``encode(value)`` (JSON) and rebuild them with ``decode(data)``.

    ``register_type(Decimal, str, Decimal)``, say. Subclasses are encoded by
    the nearest registered base; decoding uses the exact annotated class.
    """
    if not isinstance(cls, type):
        raise TypeError("register_type(cls, encode, decode): cls must be a class")
    _SERIALIZERS[cls] = _Codec(encode, decode)


def register_serializer(cls: type[T], serializer: Serializer[T]) -> None:
    """:func:`register_type` with a :class:`Serializer` object."""
    register_type(cls, serializer.encode, serializer.decode)


def _pydantic_base() -> type | None:
    module = sys.modules.get("pydantic")  # a model instance means pydantic is already imported
    return getattr(module, "BaseModel", None) if module is not None else None


def to_json(value: Any) -> Any:
    """The JSON form of a non-JSON ``value`` (``json.dumps(default=to_json)``); TypeError otherwise."""
    for cls in type(value).__mro__:
        codec = _SERIALIZERS.get(cls)
        if codec is not None:
            return codec.encode(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # init fields only: the others are derived (``__post_init__``) and rebuilt on decoding; nested ones encode in turn
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
    base = _pydantic_base()
    if base is not None and isinstance(value, base):
        return value.model_dump(mode="json")  # type: ignore[attr-defined]
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def decode_as(tp: Any, data: Any) -> Any:
    """``data`` (decoded JSON) rebuilt as annotated type ``tp``; raises :class:`TypedValueError`."""
    try:
        return _decode(tp, data)
    except TypedValueError:
        raise
    except Exception as exc:  # a constructor or validator refused the data
        raise TypedValueError(f"stored value does not fit {_name(tp)}: {type(exc).__name__}: {exc}") from None


def _decode(tp: Any, data: Any) -> Any:
    if tp is Any or tp is None or tp is type(None) or isinstance(tp, TypeVar):
        return data
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        return _decode_union(tp, data)
    if origin in (list, tuple, set, frozenset, abc.Sequence, abc.MutableSequence):
        return _decode_sequence(tp, origin, data)
    if origin is dict:
        args = typing.get_args(tp)
        value_type = args[1] if len(args) == 2 else Any
        return {k: _decode(value_type, v) for k, v in _expect(dict, data, tp).items()}
    if origin is not None:  # Literal, Annotated, other generics: keep the JSON value
        return data
    if not isinstance(tp, type):
        return data
    if tp in _SERIALIZERS:
        return _SERIALIZERS[tp].decode(data)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data)
    base = _pydantic_base()
    if base is not None and issubclass(tp, base):
        return tp.model_validate(data)  # type: ignore[attr-defined]
    return data


def _decode_union(tp: Any, data: Any) -> Any:
    args = typing.get_args(tp)
    if data is None and type(None) in args:
        return None
    errors = []
    for option in args:
        if option is type(None):
            continue
        try:
            return decode_as(option, data)
        except TypedValueError as exc:
            errors.append(str(exc))
    raise TypedValueError(f"stored value fits none of {_name(tp)}: {'; '.join(errors)}")


def _decode_sequence(tp: Any, origin: Any, data: Any) -> Any:
    args = typing.get_args(tp)
    items = _expect(list, data, tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return tuple(_decode(a, v) for a, v in zip(args, items))
    item_type = args[0] if args else Any
    decoded = [_decode(item_type, v) for v in items]
    return decoded if origin in (list, abc.Sequence, abc.MutableSequence) else origin(decoded)


def _decode_dataclass(cls: type, data: Any) -> Any:
    values = _expect(dict, data, cls)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = set(values) - set(fields)
    if unknown:
        raise TypedValueError(f"stored value has fields {sorted(unknown)} that {cls.__name__} does not declare")
    return cls(**{name: _decode(hints.get(name, Any), value) for name, value in values.items()})


def _expect(kind: type, data: Any, tp: Any) -> Any:
    if not isinstance(data, kind):
        raise TypedValueError(f"stored value {data!r:.80} is not a JSON {'object' if kind is dict else 'array'} for {_name(tp)}")
    return data


def _name(tp: Any) -> str:
    return getattr(tp, "__qualname__", None) or str(tp)


#: Resolved annotations already found, by function or class (only successes: a forward reference may resolve later).
_HINTS: dict[Any, dict[str, Any]] = {}


def _hints(target: Any) -> dict[str, Any]:
    """Resolved annotations of a function or class; ``{}`` when they cannot be resolved."""
    try:
        return _HINTS[target]
    except (KeyError, TypeError):  # TypeError: not hashable
        pass
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # a forward reference that does not resolve: no typed decoding
        return {}
    try:
        _HINTS[target] = hints
    except TypeError:
        pass
    return hints


def _typed(tp: Any) -> bool:
    """Whether decoding into ``tp`` can give something other than the JSON value itself."""
    if tp is None or tp is Any:
        return False
    if typing.get_origin(tp) is not None:
        return any(_typed(arg) for arg in typing.get_args(tp))
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or tp in _SERIALIZERS or _is_model(tp))


def _is_model(tp: type) -> bool:
    base = _pydantic_base()
    return base is not None and issubclass(tp, base)


def step_result(fn: Callable[..., Any], value: Any) -> Any:
    """A step's decoded JSON ``value`` as ``fn``'s annotated return type (unchanged when not typed)."""
    tp = _hints(fn).get("return")
    return decode_as(tp, value) if _typed(tp) else value


def typed_inputs(fn: Callable[..., Any]) -> bool:
    """Whether any parameter of ``fn`` is annotated with a type :func:`workflow_inputs` decodes into."""
    return any(_typed(tp) for name, tp in _hints(fn).items() if name != "return")


def workflow_inputs(fn: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """A workflow's JSON input with each value decoded as ``fn``'s annotated parameter."""
    hints = _hints(fn)
    return {name: decode_as(hints[name], v) if _typed(hints.get(name)) else v for name, v in values.items()}


__all__ = ["Serializer", "TypedValueError", "decode_as", "register_serializer", "register_type", "step_result",
           "to_json", "typed_inputs", "workflow_inputs"]
