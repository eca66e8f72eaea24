"""
The core's values and interfaces: what happened (events), and what the core
needs of a session, a renderer and a bus. It imports nothing else from chatd
(docs/ARCHITECTURE.md, "Imports").
"""
