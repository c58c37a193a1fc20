"""``dilconv explore``: a local web page that shows what a dilated convolution reads.

The server (:mod:`dilconv.explore.server`, standard library only) answers a
strict JSON API (:mod:`dilconv.explore.api`) whose every number comes from
dilconv, and serves the packaged page under ``static/``.
"""

from dilconv.explore.server import make_server, serve

__all__ = ["make_server", "serve"]
