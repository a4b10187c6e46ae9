"""avpipe's core library (installed as ``avpipe.pipeline``)."""

from avpipe import __version__

__all__ = ["__version__"]
