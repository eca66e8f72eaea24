import os
import sys

# Tests import the source tree, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daemon import daemon  # noqa: E402,F401  (the real-daemon fixture, for every test module)
