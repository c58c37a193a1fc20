"""Write ``examples/tutorial.ipynb``, the tutorial as a notebook, from the cells below.

Run ``python examples/make_tutorial_notebook.py`` after editing a cell; the notebook
is committed without outputs (``tests/test_notebook.py`` executes it and checks
that it matches this script).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).with_name("tutorial.ipynb")

CELLS: list[tuple[str, str]] = [
    (
        "md",
        """\
# Dilated convolution, in NumPy and TensorFlow, with dilconv

Yu and Koltun (*Multi-Scale Context Aggregation by Dilated Convolutions*, arXiv 1511.07122)
widen a convolution kernel without adding parameters: the kernel's taps are spread
`d` pixels apart. The ordinary convolution is the **1-dilated** one.

This notebook follows the 2018 tutorial *Understanding 2D Dilated Convolution Operation
with Examples in NumPy and TensorFlow*: one small matrix, one 3x3 kernel, dilation factors
1 to 4, computed the NumPy way and the TensorFlow way, then the flip, and finally the
gradient, which is a transposed convolution. Every figure is drawn by `dilconv.viz` from
numbers dilconv computes.""",
    ),
    (
        "code",
        """\
%matplotlib inline
import matplotlib.pyplot as plt  # noqa: F401  (registers the inline figure display)
import numpy as np
from scipy import signal

import dilconv
from dilconv import viz

np.set_printoptions(linewidth=120)""",
    ),
    (
        "md",
        """\
## 1. A dilated kernel is a kernel with zeros between its taps

Dilation `d` inserts `d - 1` zeros between neighbouring taps, so a 3x3 kernel becomes
`(2d + 1) x (2d + 1)`: its extent is `d * (k - 1) + 1`.""",
    ),
    (
        "code",
        """\
k = np.arange(1, 10).reshape(3, 3)
print(dilconv.dilate_kernel(k, 2))
print([dilconv.effective_kernel_size(3, d) for d in (1, 2, 3, 4)])
viz.kernel_dilation()""",
    ),
    (
        "md",
        """\
## 2. The experiment: one matrix, one kernel, dilations 1 to 4

The kernel is asymmetric on purpose, so that flipping it matters later.""",
    ),
    (
        "code",
        """\
from dilconv.tutorial import default_size, inputs

dilations = [1, 2, 3, 4]
x, kernel = inputs(default_size(dilations), seed=0)
print(x)
print(kernel)""",
    ),
    (
        "md",
        """\
### The NumPy route

For each factor, build the dilated kernel explicitly and run an ordinary 2-D
convolution (`scipy.signal.convolve2d`, a *true* convolution: it flips the kernel).""",
    ),
    (
        "code",
        """\
numpy_results = {
    d: signal.convolve2d(x, dilconv.dilate_kernel(kernel, d), mode="valid") for d in dilations
}
for d, y in numpy_results.items():
    print(f"dilation {d}: {y.shape}")
print(numpy_results[2])""",
    ),
    (
        "md",
        """\
### The TensorFlow route

TensorFlow keeps the original 3x3 kernel and takes the dilation as an argument, in two
ways: `tf.nn.conv2d(..., dilations=d)` and `tf.nn.atrous_conv2d(..., rate=d)`. Both
compute **cross-correlation**: they do not flip the kernel. To match NumPy's true
convolution, flip the kernel by hand first.""",
    ),
    (
        "code",
        """\
import tensorflow as tf

x4 = tf.constant(x[None, :, :, None], tf.float64)  # (N, H, W, C)
flipped = kernel[::-1, ::-1]
w4 = tf.constant(flipped[:, :, None, None].copy(), tf.float64)  # (kh, kw, C_in, C_out)

for d in dilations:
    by_conv2d = tf.nn.conv2d(x4, w4, strides=1, padding="VALID", dilations=d)[0, :, :, 0]
    by_atrous = tf.nn.atrous_conv2d(x4, w4, rate=d, padding="VALID")[0, :, :, 0]
    same = np.array_equal(by_conv2d.numpy(), numpy_results[d]) and np.array_equal(
        by_atrous.numpy(), numpy_results[d]
    )
    print(f"dilation {d}: tf.nn.conv2d and tf.nn.atrous_conv2d match NumPy: {same}")
    assert same""",
    ),
    (
        "md",
        """\
In 2018 the hosted notebook's TensorFlow raised an error for `tf.nn.conv2d` with a
dilation larger than 2, so the tutorial commented that call out. Today's TensorFlow runs
it, as above.

### The dilconv route

`dilconv.conv2d` takes the original kernel and the dilation, like TensorFlow, and
`flip=True` asks for the true convolution, like NumPy. The results are exact integers.""",
    ),
    (
        "code",
        """\
for d in dilations:
    ours = dilconv.conv2d(x, kernel, dilation=d, flip=True)
    assert np.array_equal(ours, numpy_results[d])
    print(f"dilation {d}: dilconv.conv2d {ours.shape} {ours.dtype} equals NumPy")
viz.tutorial_results()""",
    ),
    (
        "md",
        """\
## 3. The flip

Without the flip, TensorFlow computes a different number: cross-correlation. dilconv's
default (`flip=False`) is the same cross-correlation as TensorFlow and PyTorch.""",
    ),
    (
        "code",
        """\
w_unflipped = tf.constant(kernel[:, :, None, None], tf.float64)
tf_corr = tf.nn.conv2d(x4, w_unflipped, strides=1, padding="VALID", dilations=2)[0, :, :, 0]
print("equals NumPy's convolution:", np.array_equal(tf_corr.numpy(), numpy_results[2]))
print("equals dilconv.conv2d(flip=False):",
      np.array_equal(tf_corr.numpy(), dilconv.conv2d(x, kernel, dilation=2)))""",
    ),
    (
        "md",
        """\
## 4. Why dilate: the receptive field grows exponentially

A stack of 3x3 layers with dilations 1, 2, 4, 8 sees 3, 7, 15 and 31 pixels, while the
parameters grow linearly. A stack of *equal* dilations leaves holes (gridding); mixing
them (1, 2, 5) does not.""",
    ),
    (
        "code",
        """\
stack = [(3, 1, d) for d in (1, 2, 4, 8)]  # (kernel, stride, dilation)
print([field.size for field in dilconv.receptive_field(stack)])
viz.receptive_growth()""",
    ),
    (
        "code",
        """\
viz.gridding()""",
    ),
    (
        "md",
        """\
Dilation is not stride: a stride skips output pixels, each still reading a compact
window; a dilation keeps every output pixel and spreads each one's taps.""",
    ),
    (
        "code",
        """\
viz.stride_vs_dilation()""",
    ),
    (
        "md",
        """\
## 5. The gradient is a transposed convolution

The tutorial closes on this remark. The gradient of `y = conv2d(x, w, dilation=d)` with
respect to `x` spreads each output-gradient pixel back over the input pixels it read,
weighted by the kernel: that is `conv2d_transpose`. dilconv computes it both ways and
TensorFlow's automatic differentiation agrees.""",
    ),
    (
        "code",
        """\
d = 2
y = dilconv.conv2d(x, kernel, dilation=d)
grad_out = np.random.default_rng(1).integers(-2, 3, size=y.shape)
grad_x = dilconv.conv2d_grad_input(grad_out, kernel, x.shape, dilation=d)
transposed = dilconv.conv2d_transpose(grad_out[None, None], kernel[None, None], dilation=d)[0, 0]
print("conv2d_grad_input equals conv2d_transpose:", np.array_equal(grad_x, transposed))

# The adjoint identity <conv2d(x), g> == <x, conv2d_transpose(g)>.
print("adjoint identity:", int((y * grad_out).sum()) == int((x * transposed).sum()))

# TensorFlow's gradient (atrous_conv2d: TensorFlow's CPU kernels refuse the gradient of
# tf.nn.conv2d with a dilation above 1, much as the tutorial's TensorFlow once refused d > 2).
xv = tf.Variable(x[None, :, :, None].astype(np.float64))
with tf.GradientTape() as tape:
    out = tf.nn.atrous_conv2d(xv, tf.constant(kernel[:, :, None, None], tf.float64), rate=d,
                              padding="VALID")
tf_grad = tape.gradient(out, xv, output_gradients=grad_out[None, :, :, None].astype(np.float64))
print("TensorFlow's gradient agrees:", np.allclose(tf_grad.numpy()[0, :, :, 0], grad_x))
viz.gradient_transposed()""",
    ),
    (
        "md",
        """\
## 6. See it move

`dilconv explore` serves a local page where you change the sizes, the stride, the padding
and the dilation and see which input pixels each output pixel reads, with every number
computed by dilconv. `dilconv figures --out DIR` writes the figures above as PNG and SVG.""",
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook, without outputs."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for n, (kind, source) in enumerate(CELLS):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell["id"] = f"cell-{n:02d}"
        nb.cells.append(cell)
    return nb


def main() -> None:
    nbformat.write(build(), NOTEBOOK)
    print(f"wrote {NOTEBOOK}")


if __name__ == "__main__":
    main()
