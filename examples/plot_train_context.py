"""
Training the context module (short)
===================================

Two networks with the same layers and the same number of parameters learn to mark
every pixel that lies within 20 pixels of a marker. One spaces its 3x3 taps with
dilations 1, 1, 2, 4, 8, 16 (a 65x65 receptive field, like Yu & Koltun's context
module); the other is undilated (13x13). Plain NumPy: dilconv's convolutions forward,
its transposed convolutions and weight gradients backward, SGD with momentum.

This is a short run (40 steps); ``python examples/train_context.py`` runs the full 200
and prints the learning curves.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from train_context import bce_with_logits, evaluate, field, make_batch, network

from dilconv import nn

size, radius, steps = 64, 20.0, 40
x_test, y_test = make_batch(np.random.default_rng(10**6), 16, size, 3, radius)
prior = float(y_test.mean())
stacks = {"dilated": (1, 1, 2, 4, 8, 16), "undilated": (1,) * 6}
nets = {name: network(d, 12, 0, prior) for name, d in stacks.items()}
for name, net in nets.items():
    count = sum(p.size for p in net.parameters())
    print(f"{name}: {count} parameters, receptive field {field(stacks[name])} pixels")

# %%
# Training: both networks see the same batches.
curves: dict[str, list[tuple[int, float]]] = {name: [] for name in nets}
for name, net in nets.items():
    rng = np.random.default_rng(1)
    opt = nn.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for step in range(1, steps + 1):
        x, y = make_batch(rng, 8, size, 3, radius)
        opt.zero_grad()
        _, grad = bce_with_logits(net(x), y)
        net.backward(grad)
        opt.step()
        if step % 10 == 0:
            loss, accuracy = evaluate(net, x_test, y_test)
            curves[name].append((step, accuracy))
            print(f"{name:>9} step {step:3d}: test loss {loss:.4f}, pixel accuracy {accuracy:.1%}")

# %%
# What each network predicts on a test image: only the dilated one can see a marker
# 20 pixels away.
fig, axes = plt.subplots(1, 4, figsize=(11, 3), layout="constrained")
panels = [("input", x_test[0, 0]), ("target", y_test[0, 0])]
panels += [(name, net(x_test[:1])[0, 0] > 0) for name, net in nets.items()]
for ax, (title, img) in zip(axes, panels, strict=True):
    ax.imshow(img, cmap="gray")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
plt.show()

# %%
# The pixel accuracy on the test images along the run.
fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
for name, points in curves.items():
    ax.plot(*zip(*points, strict=True), marker="o", label=name)
ax.set_xlabel("step")
ax.set_ylabel("test pixel accuracy")
ax.legend()
plt.show()
