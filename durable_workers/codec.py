"""Stored values: JSON encoding and decoding, and exceptions as data.

Every value the engine stores is JSON text. Decoding a stored value that is
not valid JSON (a corrupt row) raises :class:`CorruptRecordError` naming the
workflow, the step and the column, instead of a bare ``ValueError`` that user
code could catch and turn into a business decision.

A step failure is stored as a JSON object ``{"type", "message", "args",
"attrs", "traceback"}`` so that replay can raise an exception of the same
type, with the same arguments and attributes, as the first run did.
"""

from __future__ import annotations

import importlib
import json
import traceback
from typing import Any

from .errors import CorruptRecordError, InputError, NotSerializableError, StepFailedError
from .typed import to_json


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's ``__str__`` itself raises."""
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        return f"<{type(exc).__name__}: str() failed>"


def format_traceback(exc: BaseException) -> str:
    """The formatted traceback of ``exc`` (the standard library survives a broken ``__str__``)."""
    try:
        return "".join(traceback.format_exception(exc)).rstrip()
    except Exception:  # pragma: no cover - formatting itself failed
        return f"{type(exc).__name__}: <traceback unavailable>"


def encode_json(value: Any, what: str) -> str:
    """JSON text of ``value``; raises :class:`NotSerializableError` naming ``what``."""
    try:
        return json.dumps(value, allow_nan=False, default=to_json)
    except (TypeError, ValueError) as exc:
        raise NotSerializableError(
            f"{what} returned {type(value).__name__}, which is not JSON-serialisable ({exc}); "
            "return JSON values, dataclasses, pydantic models or types given to register_type"
        ) from None


def decode_json(text: str | None, *, workflow_id: str, column: str, step_key: str | None = None) -> Any:
    """The value stored as ``text`` (``None`` stays ``None``); raises :class:`CorruptRecordError`."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CorruptRecordError(workflow_id, column, step_key, str(exc)) from None


#: How a stored value that does not decode is shown by read commands.
CORRUPT_MARK = "<corrupt: does not decode>"


def decode_for_display(text: str | None) -> tuple[Any, bool]:
    """``(value, True)`` for stored JSON text, ``(CORRUPT_MARK, False)`` when it does not decode."""
    if text is None:
        return None, True
    try:
        return json.loads(text), True
    except (TypeError, ValueError):
        return CORRUPT_MARK, False


def _json_or_none(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return None


def encode_error(exc: BaseException) -> str:
    """Serialise an exception so that replay can raise the same one.

    ``args`` and the JSON-serialisable entries of the instance ``__dict__``
    (``attrs``) are kept, so exceptions whose constructors take keyword
    arguments can be rebuilt too.
    """
    cls = type(exc)
    attrs = {}
    for name, value in getattr(exc, "__dict__", {}).items():
        if not name.startswith("__"):
            encoded = _json_or_none(value)
            if encoded is not None or value is None:
                attrs[name] = encoded
    return json.dumps(
        {
            "type": f"{cls.__module__}.{cls.__qualname__}",
            "message": safe_str(exc),
            "args": _json_or_none(list(exc.args)),
            "attrs": attrs,
            "traceback": format_traceback(exc),
        }
    )


def error_message(type_name: str, message: str) -> str:
    """A stored error for a failure the engine decides (poison step, timeout note)."""
    return json.dumps({"type": type_name, "message": message, "args": None, "attrs": {}})


def decode_error(error: str | None, *, workflow_id: str, step_key: str) -> dict[str, Any]:
    """The stored failure of a step as a dict; raises :class:`CorruptRecordError`."""
    data = decode_json(error or "", workflow_id=workflow_id, column="error", step_key=step_key)
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise CorruptRecordError(workflow_id, "error", step_key, "not an encoded exception")
    return data


def _import_class(type_name: str) -> type | None:
    module_name, _, qualname = type_name.rpartition(".")
    if not module_name:
        return None
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except Exception:  # the class moved or its module fails to import: no rebuild
        return None
    return target if isinstance(target, type) and issubclass(target, Exception) else None


def _rebuild(cls: type, args: list[Any], attrs: dict[str, Any], message: str) -> Exception | None:
    try:
        rebuilt = cls(*args)
        rebuilt.__dict__.update(attrs)
        if str(rebuilt) == message:
            return rebuilt
    except Exception:  # a constructor that needs other arguments: build without calling it
        pass
    try:
        rebuilt = cls.__new__(cls, *args)
        rebuilt.args = tuple(args)
        rebuilt.__dict__.update(attrs)
        if str(rebuilt) == message:
            return rebuilt
    except Exception:  # cannot be built without its constructor
        pass
    return None


def rebuild_error(step_key: str, data: dict[str, Any]) -> Exception:
    """The exception a recorded step failure raises on replay.

    The original class when it can be imported and rebuilt with the same
    arguments, attributes and text; otherwise :class:`StepFailedError` carrying
    its type name, message and attributes.
    """
    type_name, message = data.get("type", "Error"), str(data.get("message", ""))
    args, attrs = data.get("args"), data.get("attrs") or {}
    cls = _import_class(type_name)
    if cls is not None and args is not None:
        rebuilt = _rebuild(cls, list(args), dict(attrs), message)
        if rebuilt is not None:
            return rebuilt
    return StepFailedError(step_key, type_name, message, attrs)


def summarize_error(error: str | None) -> str:
    """The one-line ``Type: message`` of a stored error (JSON from the engine, or plain text)."""
    if not error:
        return ""
    try:
        data = json.loads(error)
    except ValueError:
        return error.splitlines()[0]
    if not isinstance(data, dict):
        return error
    return f"{str(data.get('type', 'Error')).rsplit('.', 1)[-1]}: {data.get('message', '')}"


def encode_input(values: Any) -> str:
    """Canonical JSON of a workflow input; raises :class:`InputError` unless it is a JSON object."""
    if not isinstance(values, dict):
        raise InputError(
            f"input must be a JSON object of keyword arguments, got {type(values).__name__}"
        )
    try:
        return json.dumps(values, sort_keys=True, allow_nan=False, default=to_json)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input is not JSON-serialisable: {exc}") from None


def parse_input(text: str | None, source: str = "--input") -> dict[str, Any]:
    """Parse ``--input`` text (``source`` names where it came from in errors).

    Empty or missing text is ``{}``. Raises :class:`InputError` with a
    one-line reason when it is not JSON or not a JSON object.
    """
    if text is None or text.strip() == "":
        return {}
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{source} is not valid JSON ({exc}); example: --input '{{\"employee_id\": \"emp-1\"}}'") from None
    encode_input(values)
    return values
