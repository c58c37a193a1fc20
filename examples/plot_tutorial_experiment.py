"""
The tutorial's experiment
=========================

The tutorial that dilconv grew from convolves one small integer image with an
asymmetric 3x3 kernel at dilations 1 to 4: once with NumPy and SciPy (``convolve2d``
of the kernel with ``d - 1`` zeros inserted between its taps) and once with a
framework's dilated convolution. Here every route that is installed runs at every
dilation, and the largest difference between any two is printed: the routes agree
exactly. ``dilconv demo`` prints the same table with TensorFlow's columns.
"""

# %%
# The inputs: a 13x13 integer image and an asymmetric kernel (so that the flip
# between correlation and convolution shows).
import matplotlib.pyplot as plt
import numpy as np

import dilconv
from dilconv import tutorial

dilations = [1, 2, 3, 4]
x, kernel = tutorial.inputs(tutorial.default_size(dilations), seed=0)
print("kernel:\n", kernel)

# %%
# Every route at every dilation: the tutorial's NumPy code and
# ``dilconv.conv2d(flip=True)``, and PyTorch's ``F.conv2d(dilation=d)`` with the kernel
# flipped by hand when PyTorch is installed.
routes = list(tutorial.NUMPY_ROUTES)
try:
    import torch  # noqa: F401

    routes.append(tutorial.PEER_ROUTES[-1])
except ImportError:
    print("PyTorch is not installed: its column is left out")
results = tutorial.run_experiment(x, kernel, dilations, routes=routes)
for r in results:
    shape = next(iter(r.results.values())).shape
    print(f"d={r.dilation}: output {shape}, largest difference between routes {r.max_difference}")

# %%
# The flip matters: without it (cross-correlation, the frameworks' convention) the
# answer differs from ``convolve2d``'s true convolution.
plain = dilconv.conv2d(x, kernel, dilation=2)
true = dilconv.conv2d(x, kernel, dilation=2, flip=True)
print("largest difference without the flip:", int(np.abs(plain - true).max()))

# %%
# The outputs, one panel per dilation: the image shrinks by ``2 d`` pixels per axis
# with valid padding.
fig, axes = plt.subplots(1, len(results), figsize=(10, 2.8), layout="constrained")
for ax, r in zip(axes, results, strict=True):
    ax.imshow(r.results["dilconv.conv2d(flip=True)"], cmap="viridis")
    ax.set_title(f"d = {r.dilation}")
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()
