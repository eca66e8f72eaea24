"""chatd: a multi-room text chat server on Twisted."""

__version__ = "1.0.0"
