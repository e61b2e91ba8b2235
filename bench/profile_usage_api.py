"""Where a usage API request's time goes: cProfile (or wall-clock totals) of the
WSGI application called in-process, without gunicorn or a socket.

    eval "$(.venv/bin/python -m config.devservers up)"
    .venv/bin/python bench/profile_usage_api.py --requests 2000            # single events
    .venv/bin/python bench/profile_usage_api.py --batch --requests 100     # batches of 100
    .venv/bin/python bench/profile_usage_api.py --no-profile               # time per request only

Seeds as `bench/usage_api.py` does (reused if already there).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("ALLOWED_HOSTS", "127.0.0.1")
os.environ.setdefault("HTTPS", "false")
os.environ.setdefault("STATIC_MANIFEST", "false")

import usage_api  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--batch", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()

    _wallets, _revenue, accounts, token = usage_api.prepare()
    from config.wsgi import application

    rng = random.Random(1)
    prefix = uuid.uuid4().hex[:10]

    def call(n: int) -> None:
        account = rng.choice(accounts)
        if args.batch:
            path = "/api/v1/usage/batch"
            body = {"events": [{"event_id": f"{prefix}-{n}-{i}", "customer": account,
                                "product": usage_api.PRODUCT, "quantity": "1"}
                               for i in range(usage_api.BATCH_SIZE)]}  # fmt: skip
        else:
            path = "/api/v1/usage"
            body = {"event_id": f"{prefix}-{n}", "customer": account,
                    "product": usage_api.PRODUCT, "quantity": "1"}  # fmt: skip
        payload = json.dumps(body).encode()
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": path, "SCRIPT_NAME": "",
            "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {token}", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(payload)), "wsgi.input": io.BytesIO(payload),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        }  # fmt: skip
        statuses = []
        chunks = application(environ, lambda status, headers: statuses.append(status))
        b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        assert statuses[0].startswith("200"), (statuses, b"".join(chunks))

    for n in range(20):  # warm up: connection, prepared statements, imports
        call(-n - 1)
    profiler = None if args.no_profile else cProfile.Profile()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for n in range(args.requests):
        call(n)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    per = elapsed / args.requests
    events = args.requests * (usage_api.BATCH_SIZE if args.batch else 1)
    print(f"{args.requests} requests in {elapsed:.2f}s: {1000 * per:.2f} ms per request, "
          f"{events / elapsed:,.0f} events/s (one process, {'profiled' if profiler else 'plain'})")  # fmt: skip
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
