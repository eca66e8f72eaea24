"""Implementations of :class:`chatd.store.Store` beside the embedded CSV one (chatd.persistence)."""
