"""The explorer's HTTP API: every refusal path, and every number against dilconv itself."""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import dilconv
from dilconv.explore import api
from dilconv.explore.server import ExplorerServer, make_server
from tests.extras import import_or_missing, peer_or_missing
from tests.tolerance import assert_close


@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    srv = make_server(quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(
    srv: ExplorerServer,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    host: str | None = "default",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    port = srv.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    if host == "default":
        host = f"127.0.0.1:{port}"
    if host is not None:
        conn.putheader("Host", host)
    sent = dict(headers or {})
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
        sent.setdefault("Content-Length", str(len(body)))
    for name, value in sent.items():
        conn.putheader(name, value)
    conn.endheaders()
    if body is not None:
        conn.send(body)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    return res.status, res.headers, data


def post(srv: ExplorerServer, payload: Any, path: str = "/api/conv") -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, headers, data = call(srv, "POST", path, body)
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(data)


# --- pages and assets ---------------------------------------------------------------


def test_index_and_assets_with_security_headers(server: ExplorerServer) -> None:
    status, headers, page = call(server, "GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    scripts = re.findall(rb"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    assert all(b"src=" in attrs and not inner.strip() for attrs, inner in scripts)
    assert b"http://" not in page
    assert b"https://" not in page
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        status, headers, data = call(server, "GET", f"/static/{name}")
        assert status == 200
        assert headers["Content-Type"].startswith(kind)
        assert data
        assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, data = call(server, "HEAD", "/")
    assert status == 200
    assert data == b""


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e/api.py",
        "/static/../../_spec.py",
        "/../../../etc/passwd",
        "/static/",
        "/static/app.js/..",
        "/static//etc/passwd",
        "/server.py",
        "/static/__init__.py",
    ],
)
def test_only_packaged_assets_are_served(server: ExplorerServer, path: str) -> None:
    status, headers, data = call(server, "GET", path)
    assert status == 404
    assert "error" in json.loads(data)
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:{port}",
        "127.0.0.1:1",
        "127.0.0.1",
        "10.0.0.1:{port}",
        "127.0.0.1:{port}@evil.example",
        "127.0.0.1:{port}/x",
        "127.0.0.1:abc",
        "",
        None,
    ],
)
def test_host_must_name_this_server(server: ExplorerServer, host: str | None) -> None:
    port = server.server_address[1]
    value = None if host is None else host.format(port=port)
    for method, body in (("GET", None), ("POST", b"{}")):
        status, _, data = call(server, method, "/api/limits" if body is None else "/api/conv",
                               body, host=value)  # fmt: skip
        assert status == 421, (method, value)
        assert "Host" in json.loads(data)["error"]["message"]
    for good in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert call(server, "GET", "/", host=good)[0] == 200


def test_wider_interface_answers_ip_literals_only() -> None:
    srv = make_server("0.0.0.0", 0, quiet=True)
    try:
        port = srv.port
        assert srv.host_allowed(f"192.168.1.20:{port}")
        assert srv.host_allowed(f"[fe80::1]:{port}")
        assert srv.host_allowed(f"0.0.0.0:{port}")
        assert not srv.host_allowed(f"evil.example:{port}")
        assert not srv.host_allowed(f"192.168.1.20:{port + 1}")
    finally:
        srv.server_close()


def test_cli_serves_and_prints_the_url() -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "dilconv", "explore", "--port", "0", "--quiet"]
    command += ["--host", "0.0.0.0"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"http://0\.0\.0\.0:(\d+)/", line)
            assert match, line
            conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
            conn.request("GET", "/", headers={"Host": f"127.0.0.1:{match.group(1)}"})
            res = conn.getresponse()
            assert res.status == 200
            assert b"dilconv explorer" in res.read()
            conn.close()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
    assert "warning: listening on 0.0.0.0" in err


# --- request validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"in_h": "5"}, "in_h"),
        ({"in_h": 5.0}, "in_h"),
        ({"in_h": True}, "in_h"),
        ({"dilation_w": False}, "dilation_w"),
        ({"stride_h": None}, "stride_h"),
        ({"k_w": [3]}, "k_w"),
        ({"flip": 1}, "flip"),
        ({"transposed": "yes"}, "transposed"),
        ({"padding": 1}, "padding"),
        ({"padding": "SAME"}, "padding"),
        ({"padding": [[1, True], [0, 0]]}, "pad_bottom"),
        ({"padding": [[1, 1.5], [0, 0]]}, "pad_bottom"),
        ({"padding": [[1, 1, 1], [0, 0]]}, "padding"),
        ({"padding_mode": "mirror"}, "padding_mode"),
        ({"x": "zeros"}, "x"),
        ({"x": [[1, 2]]}, "x"),
        ({"in_h": 2, "in_w": 2, "x": [[1, 2], [3, "4"]]}, "x"),
        ({"in_h": 2, "in_w": 2, "x": [[1, 2], [3, True]]}, "x"),
        ({"in_h": 2, "in_w": 2, "x": [[1, 2], [3, 1e7]]}, "x"),
        ({"k_h": 1, "k_w": 1, "w": [[None]]}, "w"),
        ({"seed": 0.5}, "seed"),
        ({"focus": "everything"}, "focus"),
    ],
)
def test_bad_types_are_refused(server: ExplorerServer, body: dict, field: str) -> None:
    status, answer = post(server, body)
    assert status == 400
    assert answer["error"]["field"] == field
    assert answer["error"]["message"]


@pytest.mark.parametrize(
    ("field", "value", "nearest"),
    [
        ("in_h", 25, 24),
        ("in_w", 0, 1),
        ("k_h", 8, 7),
        ("stride_w", 0, 1),
        ("dilation_h", 11, 10),
        ("dilation_w", 10**30, 10),
        ("seed", -1, 0),
    ],
)
def test_sizes_are_capped(server: ExplorerServer, field: str, value: int, nearest: int) -> None:
    status, answer = post(server, {field: value})
    assert status == 400
    assert answer["error"]["field"] == field
    assert answer["error"]["nearest"] == nearest
    status, _ = post(server, {"padding": [[0, api.LIMITS["pad"][1] + 1], [0, 0]]})
    assert status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b'{"in_h": NaN}',
        b'{"in_h": Infinity}',
        b'{"in_h": -Infinity}',
        b'{"in_h": 2, "in_w": 1, "x": [[1e400], [0]]}',
        b'{"in_h": 5, "in_h": 6}',
        b'{"in_h": 5',
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        b'{"in_h": ' + b"9" * 5000 + b"}",
        b'{"unknown": 1}',
        b'{"in_h": 5, "colour": "red"}',
    ],
)
def test_malformed_bodies_are_refused(server: ExplorerServer, raw: bytes) -> None:
    status, answer = post(server, raw)
    assert status == 400
    assert answer["error"]["message"]


def test_transport_errors(server: ExplorerServer) -> None:
    big = b'{"x": "' + b"1" * (70 * 1024) + b'"}'
    status, _, data = call(server, "POST", "/api/conv", big)
    assert status == 413
    assert "at most" in json.loads(data)["error"]["message"]
    status, _, _ = call(server, "POST", "/api/conv", b"{}", headers={"Content-Length": str(10**9)})
    assert status == 413
    status, _, _ = call(server, "POST", "/api/conv", b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = call(
        server, "POST", "/api/conv", None, headers={"Content-Type": "application/json"}
    )
    assert status == 411
    assert call(server, "POST", "/api/nothing", b"{}")[0] == 404
    assert call(server, "GET", "/api/conv")[0] == 404
    assert call(server, "PUT", "/api/conv", b"{}")[0] == 405
    assert call(server, "DELETE", "/")[0] == 405


# --- invalid combinations are explained ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"in_h": 3, "dilation_h": 3, "dilation_w": 1, "focus": "dilation_h"}, "dilation_h"),
        ({"in_w": 4, "k_w": 7, "dilation_w": 1, "focus": "k_w"}, "k_w"),
        ({"in_h": 3, "dilation_h": 3, "padding": "same", "padding_mode": "reflect",
          "focus": "padding_mode"},
         "padding_mode"),
        ({"transposed": True, "flip": True, "focus": "flip"}, "flip"),
        ({"transposed": True, "padding_mode": "circular"}, "padding_mode"),
    ],
)  # fmt: skip
def test_invalid_combination_names_the_nearest_valid_value(
    server: ExplorerServer, body: dict, field: str
) -> None:
    status, answer = post(server, body)
    assert status == 422
    error = answer["error"]
    assert error["field"] == field
    assert error["nearest"] is not None
    assert "Traceback" not in error["message"]
    fixed = dict(body, **{field: error["nearest"]})
    status, _ = post(server, fixed)
    assert status == 200, (fixed, error)


# --- values and index maps against dilconv ------------------------------------------

CASES = [
    {},
    {"dilation_h": 1, "dilation_w": 1, "padding": "full"},
    {"dilation_h": 3, "dilation_w": 2, "stride_h": 2, "padding": "same", "in_w": 9},
    {"in_h": 6, "in_w": 5, "k_h": 2, "k_w": 3, "padding": [[2, 1], [0, 3]], "stride_w": 3},
    {"padding": "same", "padding_mode": "reflect", "flip": True},
    {"padding": [[3, 1], [2, 2]], "padding_mode": "circular", "dilation_w": 3},
    {"padding": "full", "padding_mode": "replicate", "stride_h": 2},
    {"padding": [[1, 2], [2, 0]], "padding_mode": "symmetric", "flip": True},
    {"in_h": 3, "in_w": 4, "k_h": 2, "k_w": 2, "x": [[1, 2, 3, 4], [5, 6, 7, 8], [0.5, -1, 2, 0]],
     "w": [[1, -1], [2, 0.25]], "padding": "same"},
    {"x": "ones", "w": "ones", "seed": 7, "padding": [[1, 1], [1, 1]]},
]  # fmt: skip


def _options(body: dict) -> dict:
    p = api.Params(**{k: v for k, v in body.items() if k not in ("x", "w", "padding")})
    padding = body.get("padding", "valid")
    if isinstance(padding, list):
        padding = tuple(tuple(pair) for pair in padding)
    return {**p.options, "padding": padding}


def _rebuild(answer: dict) -> np.ndarray:
    """The output from the index maps alone: sum of kernel tap times the input it reads."""
    ah, aw = answer["axes"]
    x, w = np.array(answer["x"], dtype=float), np.array(answer["w"], dtype=float)
    y = np.zeros((len(ah["reads"]), len(aw["reads"])))
    for i, row_reads in enumerate(ah["reads"]):
        for j, col_reads in enumerate(aw["reads"]):
            for ta, pr in row_reads:
                for tb, pc in col_reads:
                    sr, sc = ah["source"][pr], aw["source"][pc]
                    if sr >= 0 and sc >= 0:
                        y[i, j] += w[ta, tb] * x[sr, sc]
    return y


@pytest.mark.parametrize("body", CASES)
def test_forward_values_and_reads_match_conv2d(server: ExplorerServer, body: dict) -> None:
    status, answer = post(server, body)
    assert status == 200, answer
    x, w = np.array(answer["x"]), np.array(answer["w"])
    expected = dilconv.conv2d(x, w, **_options(body))
    y = np.array(answer["y"], dtype=expected.dtype)
    assert answer["dtype"] == str(expected.dtype)
    assert_close(y, expected)
    assert_close(_rebuild(answer), expected.astype(float))
    assert np.array_equal(answer["w_dilated"], dilconv.dilate_kernel(w, _options(body)["dilation"]))
    for axis, name in zip(answer["axes"], "HW", strict=True):
        assert axis["formula"]["numeric"].startswith(f"{name}_out = ")
        assert axis["formula"]["numeric"].endswith(f"= {axis['out']}")
    assert [a["out"] for a in answer["axes"]] == list(expected.shape)


@pytest.mark.parametrize(
    "body",
    [
        {"transposed": True},
        {"transposed": True, "stride_h": 2, "stride_w": 3, "in_h": 4, "in_w": 3, "padding": "same"},
        {"transposed": True, "stride_h": 2, "dilation_w": 1, "padding": [[1, 2], [0, 1]]},
        {"transposed": True, "stride_w": 2, "in_h": 3, "in_w": 3, "padding": "valid",
         "dilation_h": 1, "k_w": 1},
    ],
)  # fmt: skip
def test_transposed_values_and_reads(server: ExplorerServer, body: dict) -> None:
    status, answer = post(server, body)
    assert status == 200, answer
    x, w = np.array(answer["x"]), np.array(answer["w"])
    opts = _options(body)
    expected = dilconv.conv2d_transpose(
        x[None, None], w[None, None], stride=opts["stride"], padding=opts["padding"],
        dilation=opts["dilation"],
    )[0, 0]  # fmt: skip
    assert_close(np.array(answer["y"], dtype=expected.dtype), expected)
    assert_close(_rebuild(answer), expected.astype(float))
    # it is the gradient of the forward convolution on the output's shape
    grad = dilconv.conv2d_grad_input(
        x, w, expected.shape, stride=opts["stride"], padding=opts["padding"],
        dilation=opts["dilation"],
    )  # fmt: skip
    assert_close(grad.astype(float), expected.astype(float))


CODE_CASES = [
    {"dilation_h": 3, "dilation_w": 2, "stride_h": 2, "padding": "same", "in_w": 9},
    {"padding": "same", "padding_mode": "reflect", "flip": True, "stride_w": 2},
    {"padding": [[1, 2], [2, 0]], "padding_mode": "symmetric"},
    {"padding": "full", "padding_mode": "replicate", "stride_h": 2, "flip": True},
    {"padding": [[3, 1], [2, 2]], "padding_mode": "circular", "dilation_w": 3, "stride_w": 2},
    {"transposed": True, "stride_h": 2, "stride_w": 3, "in_h": 4, "in_w": 3, "padding": "same"},
    {"transposed": True, "stride_h": 2, "padding": [[1, 2], [0, 1]], "dilation_w": 1},
    {"transposed": True, "padding": [[4, 3], [0, 0]], "dilation_h": 1, "in_h": 7},
]


@pytest.mark.parametrize("body", CODE_CASES)
@pytest.mark.parametrize("lang", ["dilconv", "pytorch", "jax"])
def test_copy_as_code_runs_and_agrees(server: ExplorerServer, body: dict, lang: str) -> None:
    status, answer = post(server, body)
    assert status == 200, answer
    x64 = import_or_missing("jax").config.jax_enable_x64 if lang == "jax" else None
    namespace: dict[str, Any] = {}
    exec(answer["code"][lang], namespace)  # noqa: S102 (our own generated snippet)
    assert_close(np.asarray(namespace["y"], dtype=float), np.array(answer["y"], dtype=float))
    if lang == "jax":  # float64 for this call only: the process's setting is untouched
        assert import_or_missing("jax").config.jax_enable_x64 == x64


@pytest.mark.peers
@pytest.mark.parametrize("body", CODE_CASES)
def test_copy_as_code_tensorflow(server: ExplorerServer, body: dict) -> None:
    peer_or_missing("tensorflow")
    status, answer = post(server, body)
    assert status == 200, answer
    namespace: dict[str, Any] = {}
    exec(answer["code"]["tensorflow"], namespace)  # noqa: S102
    assert_close(np.asarray(namespace["y"], dtype=float), np.array(answer["y"], dtype=float))


# --- receptive field panel ----------------------------------------------------------


def test_receptive_panel(server: ExplorerServer) -> None:
    status, answer = post(server, {"stack": "3:1, 3:2, 3:4, 3:8"}, "/api/receptive")
    assert status == 200
    assert [layer["size"] for layer in answer["layers"]] == [3, 7, 15, 31]
    layers = [(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)]
    assert np.array_equal(answer["coverage"], dilconv.coverage(layers))
    assert answer["holes"] == 0
    status, answer = post(server, {"stack": "3:2,3:2,3:2"}, "/api/receptive")
    assert answer["holes"] == int((dilconv.coverage([(3, 1, 2)] * 3) == 0).sum()) > 0
    status, answer = post(server, {"stack": "3:2:2,2:1"}, "/api/receptive")
    assert [(la["stride"], la["jump"]) for la in answer["layers"]] == [(2, 2), (1, 2)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"stack": "3"}, 422),
        ({"stack": "3:x"}, 422),
        ({"stack": "3:-1"}, 422),
        ({"stack": "3:0"}, 422),
        ({"stack": "3:1:1:1"}, 422),
        ({"stack": ",".join(["3:1"] * 11)}, 422),
        ({"stack": "9:64,9:64"}, 422),
        ({"stack": 31}, 400),
        ({"stack": "3:1" * 100}, 400),
        ({"stack": "3:1", "depth": 2}, 400),
    ],
)
def test_receptive_refusals(server: ExplorerServer, body: dict, status: int) -> None:
    got, answer = post(server, body, "/api/receptive")
    assert got == status
    assert answer["error"]["message"]


def test_limits_describe_the_controls(server: ExplorerServer) -> None:
    status, _, data = call(server, "GET", "/api/limits")
    info = json.loads(data)
    assert status == 200
    assert info["limits"]["in_h"] == list(api.LIMITS["in_h"])
    assert "reflect" in info["padding_modes"]
    assert info["defaults"]["dilation_h"] == api.Params().dilation_h


# --- any request within the caps: an answer that adds up, or a 422 that explains -----

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {
        name: draw(st.integers(lo, min(hi, 9)))
        for name, (lo, hi) in api.LIMITS.items()
        if name not in ("pad", "seed")
    }
    body["padding"] = draw(
        st.one_of(
            st.sampled_from(["valid", "same", "full"]),
            st.lists(st.lists(st.integers(0, 6), min_size=2, max_size=2), min_size=2, max_size=2),
        )
    )
    body["padding_mode"] = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular",
                                                 "symmetric"]))  # fmt: skip
    body["flip"] = draw(st.booleans())
    body["transposed"] = draw(st.booleans())
    body["seed"] = draw(st.integers(0, 2**31 - 1))
    return body


@given(requests())
def test_every_request_adds_up_or_is_explained(body: dict[str, Any]) -> None:
    refusal: api.ApiError | None = None
    try:
        answer = api.conv_view(body)
    except api.ApiError as err:
        refusal = err
    if refusal is None:
        assert_close(_rebuild(answer), np.array(answer["y"], dtype=float))
        return
    assert refusal.status == 422, refusal.message
    assert refusal.message
    if refusal.field is None:
        return
    # the suggested value makes the request valid, or mends this problem at least
    fixed = dict(body, **{refusal.field: refusal.nearest})
    if refusal.field in ("in_h", "in_w") and isinstance(body.get("x"), list):
        fixed["x"] = "random"
    try:
        api.conv_view(fixed)
    except api.ApiError as err:
        assert err.message != refusal.message, (fixed, err.message)  # noqa: PT017
