"""dilconv's native runtime: compiled code, its disk cache and the thread pool.

The algorithms in :mod:`dilconv._methods` use this package; nothing here knows
about convolution specs beyond the tables they are handed. Compiled code is
called only through :mod:`~dilconv._native.calls`: a call holds every array it
points into, and ``DILCONV_CHECK=1`` checks each call's extents before it runs.
``README.md`` in this folder says what is compiled, who owns which memory and how
to add a kernel.

- :mod:`~dilconv._native.compiler`: LLVM IR to a ctypes function (llvmlite's
  MCJIT), under the compile lock :data:`~dilconv._native.compiler.COMPILING`.
- :mod:`~dilconv._native.disk_cache`: the object code kept between processes,
  checked before LLVM reads it, in a directory only this user can write.
- :mod:`~dilconv._native.tile_kernel`, :mod:`~dilconv._native.winograd_kernel`,
  :mod:`~dilconv._native.winograd_weights`, :mod:`~dilconv._native.spin`: the IR.
- :mod:`~dilconv._native.jit_kernels`: the Numba row loops of ``compiled``.
- :mod:`~dilconv._native.pool`: the worker threads, one job object per call.
- :mod:`~dilconv._native.forksafe`: locks and state reset in a forked child.

Processes and signals: a forked child finds every lock here released and a pool
of its own; Ctrl+C interrupts a threaded call at once (the main thread waits
while the workers run the items; an interrupted job's running items finish in
the background and touch nothing of later calls); at exit the workers are
stopped and running items get :data:`~dilconv._native.pool.EXIT_WAIT` seconds.
"""
