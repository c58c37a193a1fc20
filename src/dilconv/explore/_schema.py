"""Strict parsing of the explorer's JSON requests: every field checked, nothing guessed.

Integers only where integers are meant (``true`` is not ``1``), no NaN or
Infinity, no duplicate or unknown keys, and a cap on every size. A violation is
an :class:`ApiError`, which the server answers with a 4xx JSON error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

#: Largest request body the server reads, in bytes.
MAX_BODY_BYTES = 64 * 1024
#: Largest magnitude of a typed input or kernel value.
MAX_ABS_VALUE = 1e6


class ApiError(Exception):
    """A request the explorer refuses: HTTP ``status``, the ``field`` at fault, a message.

    ``nearest`` is the closest value of ``field`` that would be accepted, when there
    is one, so the page can say what to change.
    """

    def __init__(
        self, status: int, message: str, *, field: str | None = None, nearest: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.nearest = nearest

    def payload(self) -> dict[str, Any]:
        """The JSON body of the error answer."""
        return {"error": {"message": self.message, "field": self.field, "nearest": self.nearest}}


def _refuse_constant(name: str) -> Any:
    raise ApiError(400, f"{name} is not a number JSON allows; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, f"{text} overflows a float; send a finite number")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ApiError(400, f"key {key!r} appears twice", field=key)
        out[key] = value
    return out


def parse_body(body: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object, strictly.

    Examples
    --------
    >>> parse_body(b'{"in_h": 5}')
    {'in_h': 5}
    >>> parse_body(b'{"in_h": NaN}')
    Traceback (most recent call last):
    ...
    dilconv.explore._schema.ApiError: NaN is not a number JSON allows; send a finite number
    """
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body has {len(body)} bytes; at most {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(value).__name__}")
    return value


def check_keys(obj: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse any key not in ``allowed``."""
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            f"unknown key {unknown[0]!r}; the known keys are {', '.join(allowed)}",
            field=unknown[0],
        )


def integer(obj: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """An integer field in ``[lo, hi]``; booleans and floats refused."""
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {json.dumps(value)}", field=name)
    if not lo <= value <= hi:
        nearest = min(max(value, lo), hi)
        raise ApiError(
            400, f"{name} must be between {lo} and {hi}, got {value}", field=name, nearest=nearest
        )
    return value


def boolean(obj: Mapping[str, Any], name: str, default: bool) -> bool:
    """A JSON ``true``/``false`` field; numbers refused."""
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, got {json.dumps(value)}", field=name)
    return value


def choice(obj: Mapping[str, Any], name: str, default: str, choices: Sequence[str]) -> str:
    """A string field from a fixed list."""
    value = obj.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise ApiError(
            400,
            f"{name} must be one of {', '.join(choices)}, got {json.dumps(value)}",
            field=name,
            nearest=choices[0],
        )
    return value


def text(obj: Mapping[str, Any], name: str, default: str, max_len: int) -> str:
    """A short string field."""
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string, got {json.dumps(value)}", field=name)
    if len(value) > max_len:
        raise ApiError(400, f"{name} has {len(value)} characters; at most {max_len}", field=name)
    return value


def grid(name: str, value: Any, shape: tuple[int, int]) -> list[list[float]]:
    """A typed 2-D grid of finite numbers of exactly ``shape``."""
    rows, cols = shape
    if not isinstance(value, list) or len(value) != rows:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise ApiError(
            400,
            f"{name} must be a list of {rows} rows of {cols} numbers, got {got} rows",
            field=name,
        )
    out = []
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            raise ApiError(
                400,
                f"{name}[{r}] must be a list of {cols} numbers, got {json.dumps(row)[:60]}",
                field=name,
            )
        for c, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ApiError(
                    400, f"{name}[{r}][{c}] must be a number, got {json.dumps(v)}", field=name
                )
            if abs(v) > MAX_ABS_VALUE:
                raise ApiError(
                    400,
                    f"{name}[{r}][{c}]={v} is larger than {MAX_ABS_VALUE:g} in magnitude",
                    field=name,
                )
        out.append(list(row))
    return out
