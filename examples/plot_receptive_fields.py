"""
Receptive fields and gridding
=============================

A stack of 3x3 layers whose dilation doubles sees a field that grows exponentially
with the depth (Yu & Koltun's context module). Equal dilations in a row, however,
leave a grid of input pixels that no path reaches: *gridding*. ``dilconv.coverage``
counts, for each input pixel, the paths to the central output pixel through the
stack, so the holes show as zeros.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import dilconv

stacks = {
    "1, 1, 1, 1": [1, 1, 1, 1],
    "1, 2, 4, 8": [1, 2, 4, 8],
    "2, 2, 2, 2": [2, 2, 2, 2],
    "1, 2, 5, 9": [1, 2, 5, 9],
}
for name, dilations in stacks.items():
    layers = [(3, 1, d) for d in dilations]
    sizes = [f.size for f in dilconv.receptive_field(layers)]
    holes = int((dilconv.coverage(layers) == 0).sum())
    print(f"dilations {name}: fields {sizes}, input pixels never reached: {holes}")

# %%
# The coverage maps. Doubling dilations reach every pixel of a 31x31 field; equal
# dilations of 2 reach only one pixel in four of theirs; 1, 2, 5, 9 (no common factor)
# fill a field almost as large as the doubling stack's.
fig, axes = plt.subplots(1, len(stacks), figsize=(11, 3), layout="constrained")
for ax, (name, dilations) in zip(axes, stacks.items(), strict=True):
    counts = dilconv.coverage([(3, 1, d) for d in dilations])
    ax.imshow(np.log1p(counts), cmap="magma")
    ax.set_title(f"dilations {name}\n{counts.shape[0]}x{counts.shape[1]} field")
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %%
# The same holds inside real layers. Both stacks below see a 17x17 field, so a 17x17
# input gives one output pixel. Changing an input pixel at an odd offset, a hole of the
# equal-dilation stack, leaves its output unchanged; the 1, 2, 5 stack sees it.
rng = np.random.default_rng(0)
x = rng.random((17, 17))
poked = x.copy()
poked[0, 1] += 1.0
w = np.ones((3, 3))


def stack(img: np.ndarray, dilations: list[int]) -> float:
    for d in dilations:
        img = dilconv.conv2d(img, w, dilation=d)
    return float(img[0, 0])


for dilations in ([2, 2, 2, 2], [1, 2, 5]):
    change = stack(poked, dilations) - stack(x, dilations)
    print(f"dilations {dilations}: the output moves by {change:g}")
