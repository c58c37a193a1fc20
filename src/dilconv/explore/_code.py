"""Text the explorer shows: the output-size formula with numbers, and "copy as code".

Every number here comes from a validated spec and :mod:`dilconv._shapes`; this
module only writes it down. Each snippet is runnable Python that leaves the
result in ``y`` as a NumPy array (the tests run them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dilconv import _shapes
from dilconv._padding import _NUMPY_MODES

if TYPE_CHECKING:
    from dilconv.explore.api import Params

#: JAX computes in float32 unless asked; ask only for this call, not the whole process.
_X64 = "with jax.enable_x64(True):  # float64, like NumPy\n"
_PAD_NAMES = {"H": ("top", "bottom"), "W": ("left", "right")}


def forward_formula(
    axis: str, n: int, k: int, s: int, d: int, lo: int, hi: int, out: int
) -> dict[str, str]:
    """``out = floor((n + lo + hi - d*(k-1) - 1) / s) + 1``, symbolic and with numbers.

    >>> forward_formula("H", 7, 3, 1, 2, 0, 0, 3)["numeric"]
    'H_out = ⌊(7 + 0 + 0 − 2·(3 − 1) − 1) / 1⌋ + 1 = 3'
    """
    a, b = _PAD_NAMES[axis]
    return {
        "symbolic": f"{axis}_out = ⌊({axis} + pad_{a} + pad_{b} − d·(k − 1) − 1) / s⌋ + 1",
        "numeric": f"{axis}_out = ⌊({n} + {lo} + {hi} − {d}·({k} − 1) − 1) / {s}⌋ + 1 = {out}",
        "effective": f"dilated kernel {axis}: d·(k − 1) + 1 = {d}·({k} − 1) + 1 = "
        f"{_shapes.effective_size(k, d)}",
    }


def transposed_formula(
    axis: str, n: int, k: int, s: int, d: int, lo: int, hi: int, out: int
) -> dict[str, str]:
    """``out = (n - 1)*s - lo - hi + d*(k-1) + 1 + output_padding``, with numbers.

    >>> transposed_formula("W", 3, 3, 2, 1, 1, 1, 5)["numeric"]
    'W_out = (3 − 1)·2 − 1 − 1 + 1·(3 − 1) + 1 + 0 = 5'
    """
    a, b = _PAD_NAMES[axis]
    extra = out - _shapes.transpose_out_size(n, k, s, d, lo, hi, 0)
    return {
        "symbolic": f"{axis}_out = ({axis} − 1)·s − pad_{a} − pad_{b} + d·(k − 1) + 1 "
        "+ output_padding",
        "numeric": f"{axis}_out = ({n} − 1)·{s} − {lo} − {hi} + {d}·({k} − 1) + 1 + {extra} "
        f"= {out}",
        "effective": f"dilated kernel {axis}: d·(k − 1) + 1 = {d}·({k} − 1) + 1 = "
        f"{_shapes.effective_size(k, d)}",
    }


def _array(name: str, a: np.ndarray, comment: str) -> str:
    return f"{name} = np.array({a.tolist()!r}, dtype=np.float64)  # {comment}"


def snippets(
    p: Params, x: np.ndarray, w: np.ndarray, pads: Any, out: tuple[int, ...]
) -> dict[str, str]:
    """Equivalent dilconv, PyTorch, TensorFlow and JAX code for one explorer request.

    ``pads`` are the resolved ``((top, bottom), (left, right))`` of the forward
    convolution (for a transposed one: of the convolution it transposes) and
    ``out`` the result's ``(H, W)``.
    """
    head = "\n".join(
        ["import numpy as np", _array("x", x, "input (H, W)"), _array("w", w, "kernel (kh, kw)")]
    )
    if p.transposed:
        body = _transposed_code(p, pads, x, w, out)
    else:
        body = _forward_code(p, pads)
    return {name: f"{head}\n{code}" for name, code in body.items()}


def _forward_code(p: Params, pads: Any) -> dict[str, str]:
    (t, b), (lf, r) = pads
    s, d = p.options["stride"], p.options["dilation"]
    lines_pre = []
    if p.padding_mode != "zeros":
        mode = _NUMPY_MODES[p.padding_mode]
        lines_pre.append(
            f"x = np.pad(x, (({t}, {b}), ({lf}, {r})), mode={mode!r})"
            f"  # padding_mode={p.padding_mode!r}"
        )
        (t, b), (lf, r) = (0, 0), (0, 0)
    if p.flip:
        lines_pre.append("w = w[::-1, ::-1].copy()  # flip=True: true convolution")
    pre = "\n".join(lines_pre) + ("\n" if lines_pre else "")
    dil = (
        f"import dilconv\ny = dilconv.conv2d(x, w, stride={s}, padding={p.padding!r}, "
        f"dilation={d}, padding_mode={p.padding_mode!r}, flip={p.flip})"
    )
    torch = (
        f"import torch\nimport torch.nn.functional as F\n{pre}"
        "xt = torch.tensor(x)[None, None]  # (N, C, H, W)\n"
        "wt = torch.tensor(w)[None, None]  # (O, C, kh, kw)\n"
        f"xt = F.pad(xt, ({lf}, {r}, {t}, {b}))  # (left, right, top, bottom)\n"
        f"y = F.conv2d(xt, wt, stride={s}, dilation={d})[0, 0].numpy()"
    )
    # TensorFlow's CPU kernels refuse stride > 1 together with dilation > 1, so the
    # strided result is the stride-1 result sampled every stride pixels.
    tf_stride, sub = (s, "") if d == (1, 1) else ((1, 1), f"[::{s[0]}, ::{s[1]}]")
    tf = (
        f"import tensorflow as tf\n{pre}"
        "xt = tf.constant(x[None, :, :, None])  # (N, H, W, C)\n"
        "wt = tf.constant(w[:, :, None, None])  # (kh, kw, C, O)\n"
        f"y = tf.nn.conv2d(xt, wt, strides={tf_stride}, dilations={d},\n"
        f"                 padding=[[0, 0], [{t}, {b}], [{lf}, {r}], [0, 0]])"
        f"[0, :, :, 0].numpy(){sub}"
    )
    jax = (
        f"import jax\nfrom jax import lax\n{pre}{_X64}"
        "    y = np.asarray(lax.conv_general_dilated(x[None, None], w[None, None], "
        f"window_strides={s},\n"
        f"        padding=[({t}, {b}), ({lf}, {r})], rhs_dilation={d})[0, 0])"
    )
    return {"dilconv": dil, "pytorch": torch, "tensorflow": tf, "jax": jax}


def _transposed_code(
    p: Params, pads: Any, x: np.ndarray, w: np.ndarray, out: tuple[int, ...]
) -> dict[str, str]:
    (t, b), (lf, r) = pads
    s, d = p.options["stride"], p.options["dilation"]
    eff = [_shapes.effective_size(k, dd) for k, dd in zip(w.shape, d, strict=True)]
    full = [(n - 1) * ss + e for n, ss, e in zip(x.shape, s, eff, strict=True)]
    extra = [o - (f - lo - hi) for o, f, lo, hi in zip(out, full, (t, lf), (b, r), strict=True)]
    dil = (
        "import dilconv\ny = dilconv.conv2d_transpose(x[None, None], w[None, None], "
        f"stride={s}, padding={p.padding!r}, dilation={d})[0, 0]"
    )
    torch = (
        "import torch\nimport torch.nn.functional as F\n"
        "xt = torch.tensor(x)[None, None]\n"
        "wt = torch.tensor(w)[None, None]  # (C_in, C_out, kh, kw)\n"
        f"full = F.conv_transpose2d(xt, wt, stride={s}, dilation={d})  # no cropping\n"
        f"full = F.pad(full, (0, {max(extra[1], 0)}, 0, {max(extra[0], 0)}))\n"
        f"y = full[0, 0, {t}:{t + out[0]}, {lf}:{lf + out[1]}].numpy()  # crop the padding"
    )
    # TensorFlow's CPU kernels refuse dilation > 1 in conv2d_transpose (and in the
    # gradient of conv2d), so write the transposed convolution as a forward one: the
    # input spread by the stride, padded by (effective kernel - 1 - pad), correlated
    # with the reversed kernel.
    spread = [(n - 1) * ss + 1 for n, ss in zip(x.shape, s, strict=True)]
    keep = []
    for size, (a, b) in zip(spread, _jax_pads(eff, pads, extra), strict=True):
        total = size + max(a, 0) + max(b, 0)
        keep.append(f"{max(-a, 0)}:{total - max(-b, 0)}")
    jpads = _jax_pads(eff, pads, extra)
    tf = (
        "import tensorflow as tf\n"
        f"up = np.zeros({tuple(spread)})\nup[::{s[0]}, ::{s[1]}] = x  # spread by the stride\n"
        f"up = np.pad(up, {[(max(a, 0), max(b, 0)) for a, b in jpads]})[{', '.join(keep)}]\n"
        "wt = tf.constant(w[::-1, ::-1, None, None].copy())  # the reversed kernel\n"
        f"y = tf.nn.conv2d(up[None, :, :, None], wt, strides=1, dilations={d}, "
        'padding="VALID")[0, :, :, 0].numpy()'
    )
    # The transposed convolution as a forward one: spread the input by the stride
    # (lhs_dilation) and correlate with the reversed kernel.
    jpad = _jax_pads(eff, pads, extra)
    jax = (
        f"import jax\nfrom jax import lax\n{_X64}"
        "    y = np.asarray(lax.conv_general_dilated(x[None, None], w[None, None, ::-1, ::-1], "
        f"window_strides=(1, 1),\n        padding={jpad}, lhs_dilation={s}, "
        f"rhs_dilation={d})[0, 0])"
    )
    return {"dilconv": dil, "pytorch": torch, "tensorflow": tf, "jax": jax}


def _jax_pads(eff: list[int], pads: Any, extra: list[int]) -> list[tuple[int, int]]:
    """Padding of the stride-spread input that turns a transposed convolution forward."""
    return [(e - 1 - lo, e - 1 - hi + ex) for e, (lo, hi), ex in zip(eff, pads, extra, strict=True)]
