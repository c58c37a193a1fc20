"""dilconv's native runtime: compiled code, its disk cache and the thread pool.

The algorithms in :mod:`dilconv._methods` use this package; nothing here knows
about convolution specs beyond the tables they are handed.
"""
