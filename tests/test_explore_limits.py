"""The explorer never answers 500, and slow or idle clients cannot take it over.

The fuzz tests draw arbitrary JSON for every parameter; their length follows the
hypothesis profile (``HYPOTHESIS_PROFILE=thorough`` for a long run).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dilconv.explore import api
from dilconv.explore._receptive import receptive_view
from dilconv.explore._schema import ApiError, parse_body
from dilconv.explore.server import ROUTES, ExplorerServer, make_server


@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    srv = make_server(quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def post(srv: ExplorerServer, path: str, body: bytes, timeout: float = 30) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    res = conn.getresponse()
    data = res.read()
    conn.close()
    assert res.headers["Content-Type"].startswith("application/json")
    return res.status, json.loads(data)


@pytest.mark.parametrize("stack", ["³:1", "3:²", "٣:1", "3:1:¹", "3:1,³:2", " : ", "1e3:1"])
def test_non_ascii_digits_in_the_stack_are_refused(server: ExplorerServer, stack: str) -> None:
    status, answer = post(server, "/api/receptive", json.dumps({"stack": stack}).encode())
    assert status == 422
    assert answer["error"]["field"] == "stack"


# --- any JSON in any field: an answer or a 4xx, never 500 -------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-3, 30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "valid",
            "same",
            "full",
            "random",
            "ones",
            "zeros",
            "reflect",
            "3:1",
            "³:1",
            "3:1,3:2,3:4",
            "9:64:4," * 3,
            "0:0",
            "in_h",
        ]
    ),  # fmt: skip
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=8), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=40,
)
#: Values close to the valid ones, per field: where a parser's corner cases hide.
_NEAR = {
    "x": st.lists(st.lists(st.one_of(st.integers(-9, 9), _SCALARS), max_size=8), max_size=8),
    "padding": st.lists(
        st.lists(st.one_of(st.integers(-2, 30), _SCALARS), max_size=3), max_size=3
    ),  # fmt: skip
    "stack": st.text(alphabet="0123456789:, ³²¹٣\u0660\uff13x-+.", max_size=24),
}
_NEAR["w"] = _NEAR["x"]


@st.composite
def requests(draw: st.DrawFn, keys: tuple[str, ...]) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True))
    body = {name: draw(_NEAR.get(name, st.nothing()) | _JSON) for name in names}
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(_JSON)
    return body


def _answer_or_refusal(view: Any, body: dict[str, Any]) -> None:
    try:
        answer = view(body)
    except ApiError as err:
        refusal = err
    else:
        json.dumps(answer, allow_nan=False)  # what the server would send
        return
    assert 400 <= refusal.status < 500, (refusal.status, refusal.message)
    json.dumps(refusal.payload(), allow_nan=False)


@given(requests(api.CONV_KEYS))
def test_any_conv_request_gets_an_answer_or_a_4xx(body: dict[str, Any]) -> None:
    # The search for the nearest valid request (a few hundred computations, checked by
    # test_explore_api and by the HTTP fuzz below) is left out to draw more bodies.
    with mock.patch.object(api, "nearest_valid", return_value=None):
        _answer_or_refusal(api.conv_view, body)


@given(requests(("stack",)))
def test_any_receptive_request_gets_an_answer_or_a_4xx(body: dict[str, Any]) -> None:
    _answer_or_refusal(receptive_view, body)


@given(st.binary(max_size=200) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_any_body_parses_or_gets_a_4xx(raw: bytes) -> None:
    try:
        parse_body(raw)
    except ApiError as err:
        refusal = err
    else:
        return
    assert 400 <= refusal.status < 500


@given(body=st.one_of(requests(api.CONV_KEYS), requests(("stack",))))
def test_fuzzed_requests_over_http_never_get_500(server: ExplorerServer, body: dict) -> None:
    """The same bodies through the real server (its own error handling)."""
    for path in ROUTES:
        status, answer = post(server, path, json.dumps(body).encode())
        assert status < 500, (path, body, answer)


# --- connections: a timeout on silence, and a cap -------------------------------------


def _idle(srv: ExplorerServer, count: int) -> list[socket.socket]:
    """Connections that send nothing."""
    return [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(count)]


def _limits(srv: ExplorerServer) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", "/api/limits", headers={"Host": f"127.0.0.1:{srv.port}"})
    status = conn.getresponse().status
    conn.close()
    return status


def _wait_for_free_slots(srv: ExplorerServer, free: int) -> None:
    """Until exactly ``free`` slots are free (a handler thread lets its slot go just
    after its client has the answer; a loaded machine showed the gap)."""
    deadline = time.monotonic() + 20
    while srv._slots._value != free:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"{srv._slots._value} slots free, not {free}"  # type: ignore[attr-defined]
        time.sleep(0.005)


def test_idle_connections_are_closed_and_capped() -> None:
    srv = make_server(quiet=True, timeout=0.5, max_connections=3)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        quiet = _idle(srv, 2)
        assert _limits(srv) == 200  # two silent clients leave room for others
        _wait_for_free_slots(srv, 1)  # the answered request's thread has let its slot go
        quiet += _idle(srv, 1)  # now every slot is held by a silent client ...
        _wait_for_free_slots(srv, 0)
        extra = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        answer = extra.recv(4096)  # ... so one more is told at once, not left waiting
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"the server is busy: 3 connections" in answer
        extra.close()
        for sock in quiet:  # the silent ones are dropped after the timeout
            assert sock.recv(4096) == b""
            sock.close()
        assert _limits(srv) == 200  # and the server serves again
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_trickling_client_is_cut_off_at_the_deadline() -> None:
    """A byte every 0.1 s never trips the silence timeout; the deadline closes it."""
    srv = make_server(quiet=True, timeout=0.5, deadline=1.0, max_connections=2)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        slow.sendall(b"GET /api/limits HTTP/1.1\r\n")
        slow.settimeout(0.1)
        closed = False
        for _ in range(300):  # at most about 30 s, so the test is bounded either way
            try:
                slow.sendall(b"X")
                closed = slow.recv(4096) == b""
            except TimeoutError:
                continue  # still open: trickle on
            except OSError:  # reset or broken pipe: closed by the server
                closed = True
            if closed:
                break
        slow.close()
        assert closed
        assert _limits(srv) == 200
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    ("options", "error"),
    [({"timeout": 0}, ValueError), ({"timeout": float("inf")}, ValueError),
     ({"deadline": -1}, ValueError),
     ({"max_connections": 0}, ValueError), ({"max_connections": 2.0}, TypeError)],
)  # fmt: skip
def test_server_limits_are_checked(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(options))):
        make_server(quiet=True, **options)
