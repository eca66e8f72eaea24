"""Implementations of :class:`chatd.core.ports.Bus`."""
