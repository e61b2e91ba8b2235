"""What finding a stale connection costs per request, three ways, in-process:

- nothing (the connection is used as it is);
- `config.outage.close_stale_connections()`: one poll() on the socket (this branch);
- Django's CONN_HEALTH_CHECKS: `is_usable()`, a `SELECT 1` round trip.

Run on throwaway servers (the server sits on a unix socket, as under `make run`):

    .venv/bin/python -m config.devservers run --tmp -- .venv/bin/python bench/connection_checks.py

bench/usage_api.py measures the same through gunicorn (`CONN_HEALTH_CHECKS=true` in
its environment switches the health check on); its noise (±30 %) hides costs this
small, hence this count.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from config.outage import close_stale_connections  # noqa: E402

N = 20_000


def per_call_us(check) -> float:
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(N):
            check()
        rounds.append((time.perf_counter() - started) / N * 1e6)
    return statistics.median(rounds)


def main() -> None:
    connection.ensure_connection()
    poll = per_call_us(close_stale_connections)
    assert connection.connection is not None, "a live connection was dropped"
    select_1 = per_call_us(connection.is_usable)
    print(f"poll() check (config.outage):  {poll:8.2f} µs per request")  # noqa: T201
    print(f"SELECT 1 (CONN_HEALTH_CHECKS): {select_1:8.2f} µs per request")  # noqa: T201


if __name__ == "__main__":
    main()
