"""
Streaming a WaveNet stack
=========================

A stack of causal dilated convolutions (the WaveNet paper's dilations 1, 2, ...,
512, kernel 2, residual ``x + tanh(conv(x))`` layers) is trained briefly on a
next-sample task, then streamed: ``net.stream()`` returns a copy that shares the
weights and keeps, per layer, only the last ``dilation`` inputs, so each pushed
block yields its outputs at once. Whatever the block size, the concatenated stream
equals the batch forward on the whole signal. This is a short run of
``examples/stream_wavenet.py`` (one cycle of dilations, 16 channels, 40 steps);
the script's defaults train the full 30-layer stack.
"""

# %%
import argparse
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(here))
import stream_wavenet  # noqa: E402  (the full example, beside this file)

rng = np.random.default_rng(0)
net = stream_wavenet.wavenet(channels=16, repeats=1)
settings = argparse.Namespace(steps=40, batch=4, length=1024, lr=0.003)
stream_wavenet.train(net, settings, rng)
x = stream_wavenet.signal(rng, 1, 4000)  # a quarter of a second at 16 kHz
results = {block: stream_wavenet.stream_check(net, x, block) for block in (1, 16, 256)}
for block, (rtf, diff) in results.items():
    print(f"block {block:3d}: real-time factor {rtf:.3f}, largest difference {diff:.1e}")

# %%
# The trained stack's prediction of the next sample, streamed in blocks of 16, and
# the real-time factor of each block size (compute seconds per second of signal at
# 16 kHz: below 1 is faster than real time). Every block size gives the batch
# forward's outputs, to the largest difference printed above.
stream = net.stream()
part = x[:, :, :800]
streamed = np.concatenate([stream.push(part[:, :, t : t + 16]) for t in range(0, 800, 16)], 2)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2), layout="constrained")
left.plot(part[0, 0, 1:], label="next input sample", lw=0.8)
left.plot(streamed[0, 0, :-1], label="streamed prediction", lw=0.8)
left.set_xlabel("sample")
left.legend(loc="upper right", fontsize="small")
blocks = sorted(results)
right.bar([str(b) for b in blocks], [results[b][0] for b in blocks], color="tab:green")
right.axhline(1.0, color="gray", lw=0.8, ls="--")
right.set_xlabel("block size (samples)")
right.set_ylabel("real-time factor")
right.set_title("compute time / signal time")
