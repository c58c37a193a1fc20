"""
A Zarr image on Dask
====================

An image stored as a chunked Zarr array is convolved chunk by chunk, each chunk with
the halo its dilated kernel needs, and written to another Zarr array, never held in
memory whole. First through the library (``dilconv.dask.conv2d``, lazy), then through
the command line (``dilconv apply``); both are checked against the in-memory
``conv2d`` on the same image.
"""

# %%
import tempfile
from pathlib import Path

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
import zarr

import dilconv
import dilconv.dask
from dilconv.cli import main as dilconv_cli

work = Path(tempfile.mkdtemp(prefix="dilconv-zarr-"))
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:1024, :1024]
image = np.sin(xx / 23.0) * np.cos(yy / 31.0) + 0.3 * rng.standard_normal((1024, 1024))
image = image.astype(np.float32)
store = zarr.open_array(str(work / "in.zarr"), mode="w", shape=image.shape,
                        chunks=(256, 256), dtype="float32")  # fmt: skip
store[...] = image
kernel = np.full((3, 3), 1 / 9, np.float32)  # a box filter, dilated

# %%
# The library: a lazy Dask array, one task per chunk and its halo.
x = da.from_zarr(str(work / "in.zarr"))
y = dilconv.dask.conv2d(x, kernel, dilation=8, padding="same", padding_mode="reflect")
print("input chunks:", x.chunksize, "output chunks:", y.chunksize, "tasks:", len(y.dask))
y.to_zarr(str(work / "lib.zarr"), overwrite=True)
expected = dilconv.conv2d(image, kernel, dilation=8, padding="same", padding_mode="reflect")
lib = zarr.open_array(str(work / "lib.zarr"), mode="r")[...]
print("library route, largest difference from conv2d:", float(np.abs(lib - expected).max()))

# %%
# The command line, on Dask's threaded scheduler (without ``--scheduler`` it starts a
# local cluster of two worker processes; with an address it joins a running one).
np.save(work / "kernel.npy", kernel)
args = [str(work / "in.zarr"), str(work / "cli.zarr"), "--kernel", str(work / "kernel.npy")]
args += ["--dilation", "8", "--padding", "same", "--padding-mode", "reflect"]
status = dilconv_cli(["apply", *args, "--scheduler", "threads"])
cli = zarr.open_array(str(work / "cli.zarr"), mode="r")[...]
print("exit status", status, "- largest difference:", float(np.abs(cli - expected).max()))

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), layout="constrained")
for ax, (title, img) in zip(axes, [("input", image), ("dilation 8 box filter", cli)], strict=True):
    ax.imshow(img[:384, :384], cmap="gray")
    ax.set_title(f"{title} (top-left 384x384)")
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()
