"""dilconv's native runtime: compiled code, its disk cache and the thread pool.

The algorithms in :mod:`dilconv._methods` use this package; nothing here knows
about convolution specs beyond the tables they are handed. Compiled code is
called only through :mod:`~dilconv._native.calls`: a call holds every array it
points into, and ``DILCONV_CHECK=1`` checks each call's extents before it runs.
``README.md`` in this folder says what is compiled, who owns which memory and how
to add a kernel.
"""
