"""chatd's benchmark suite: `python -m bench` (docs/PERFORMANCE.md)."""
