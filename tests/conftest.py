import os
import sys

# Tests import the source tree, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daemon import daemon  # noqa: E402,F401  (the real-daemon fixture, for every test module)
from pg import own_pg_cluster, pg_cluster, pg_dsn  # noqa: E402,F401  (a private PostgreSQL cluster and a database on it)
from redis import redis_server, redis_url  # noqa: E402,F401  (a private redis-server and its URL)
