"""Front-ends other than the line protocol (docs/ARCHITECTURE.md, "Where new things go"): ``web``, the browser's."""
