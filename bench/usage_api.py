"""Usage events per second through the HTTP API, against the raw-SQL floor.

Run it on throwaway servers:

    .venv/bin/python -m config.devservers run --tmp -- .venv/bin/python bench/usage_api.py

What it does, all on this machine and loopback only:
1. seeds history exactly as `bench/drawdown.py` does (1,000 wallets, 200,000
   historical usage transactions), plus a product item priced at 0.01 USD per
   call and an API key;
2. starts gunicorn with 2 web processes on 127.0.0.1 and a free port;
3. measures, each for `--seconds`:
   - raw SQL: `bench/drawdown.py`'s one-statement draw-down (`RAW_SQL`) over plain
     psycopg, `--clients` processes, random wallets (the floor, same run);
   - single: `POST /api/v1/usage`, one event per request, random customers;
   - batch: `POST /api/v1/usage/batch`, 100 events of one customer per request,
     several customers in parallel;
   with events/s, p50/p95 latency per request and the ratios to raw SQL;
4. stops gunicorn (also on failure or Ctrl-C) and runs `check_ledger`.

`--ceiling` also measures, behind the same gunicorn, middleware and API-key
authentication, endpoints that only draw down (`bench/ceiling_wsgi.py`: no
rating, no usage event rows, no answers): the most any usage API could reach
on this box with this HTTP stack and this ledger.

Targets (issue 7): batch ≥ 2× raw, single ≥ 0.3× raw.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import drawdown  # noqa: E402  (bench/drawdown.py: seeding and the RAW_SQL floor)

PRODUCT = "bench-calls"
UNIT_PRICE = drawdown.AMOUNT  # one call costs what one raw draw-down takes
BATCH_SIZE = 100


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare() -> tuple[list[int], int, list[str], str]:
    """Seed (as bench/drawdown.py), then the catalogue and an API key."""
    drawdown.setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    wallet_ids, revenue = drawdown.seed()

    from datetime import timedelta

    from django.utils import timezone

    from billing.models import ApiKey, Price, ProductItem
    from wallets.models import Wallet

    item, _ = ProductItem.objects.get_or_create(code=PRODUCT, defaults={"name": "Bench calls"})
    Price.objects.get_or_create(
        product_item=item,
        currency="USD",
        dimensions={},
        defaults={"unit_price": UNIT_PRICE, "effective_from": timezone.now() - timedelta(days=1)},
    )
    _key, token = ApiKey.issue(name=f"bench {uuid.uuid4().hex[:6]}", created_by="bench")
    accounts = list(
        Wallet.objects.filter(pk__in=wallet_ids).values_list("customer__account_number", flat=True)
    )
    # Grants of the seed start "now" at seeding; usage is drawn at its timestamp,
    # so events are stamped a moment later than the seed (the default: now).
    return wallet_ids, revenue, accounts, token


# --- the web server ---------------------------------------------------------------------


def start_gunicorn(
    port: int, workers: int, worker_class: str, threads: int, *, ceiling: bool = False
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "false",
        "HTTPS": "false",
        "STATIC_MANIFEST": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        *(["--pythonpath", str(ROOT / "bench"), "ceiling_wsgi"] if ceiling else ["config.wsgi"]),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--worker-class", worker_class,
        "--threads", str(threads),
        "--backlog", "512",
        "--log-level", "warning",
        "--timeout", "60",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/v1/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop_gunicorn(process)
            raise RuntimeError("gunicorn did not answer /api/v1/health within 30 s")
        time.sleep(0.2)


def stop_gunicorn(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- HTTP clients (plain processes, no Django) -------------------------------------------


def http_client(args: tuple) -> tuple[int, list[float], dict[int, int]]:
    """Post for `seconds`; returns (events booked, request latencies, status counts)."""
    port, token, accounts, seconds, batch, seed_n, start_at, path_override = args
    rng = random.Random(seed_n)
    prefix = uuid.uuid4().hex[:10]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    booked = n = 0
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        account = rng.choice(accounts)
        if batch:
            path = "/api/v1/usage/batch"
            body = {"events": [{"event_id": f"{prefix}-{n}-{i}", "customer": account,
                                "product": PRODUCT, "quantity": "1"} for i in range(BATCH_SIZE)]}  # fmt: skip
        else:
            path = "/api/v1/usage"
            body = {"event_id": f"{prefix}-{n}", "customer": account, "product": PRODUCT,
                    "quantity": "1"}  # fmt: skip
        path = path_override or path
        payload = json.dumps(body)
        started = time.perf_counter()
        try:
            connection.request("POST", path, payload, headers)
            response = connection.getresponse()
            answer = response.read()
        except (http.client.HTTPException, OSError):
            connection.close()  # the server closed it (sync workers do): reconnect
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("POST", path, payload, headers)
            response = connection.getresponse()
            answer = response.read()
        latencies.append(time.perf_counter() - started)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        if response.status == 200:
            booked += json.loads(answer)["booked"] if batch else 1
        if response.getheader("Connection", "").lower() == "close":
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        n += 1
    connection.close()
    return booked, latencies, statuses


def measure_http(
    port: int,
    token: str,
    accounts: list[str],
    *,
    clients: int,
    seconds: float,
    batch: bool,
    path: str | None = None,
) -> dict:
    start_at = time.time() + 1.0
    jobs = [(port, token, accounts, seconds, batch, n, start_at, path) for n in range(clients)]
    with mp.get_context("spawn").Pool(clients) as pool:
        results = pool.map(http_client, jobs)
    latencies = sorted(x for _, lat, _ in results for x in lat)
    statuses: dict[int, int] = {}
    for _, _, counts in results:
        for status, count in counts.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "events_per_s": sum(b for b, _, _ in results) / seconds,
        "requests": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan"),
        "statuses": statuses,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4, help="HTTP client processes")
    parser.add_argument("--raw-procs", type=int, default=4, help="raw-SQL processes")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn web processes")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure draw-down-only endpoints behind the same HTTP stack",
    )
    parser.add_argument(
        "--time-limit", type=int, default=600, help="give up (and clean up) after this long"
    )
    args = parser.parse_args()

    def out_of_time(signum, frame):
        raise TimeoutError(f"bench/usage_api.py ran longer than {args.time_limit}s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(args.time_limit)

    wallet_ids, revenue, accounts, token = prepare()
    url = drawdown.psycopg_url()
    port = free_port()
    server = start_gunicorn(
        port, args.workers, args.worker_class, args.threads, ceiling=args.ceiling
    )
    ceilings: list[tuple[str, dict, float]] = []
    try:
        # Warm up: every web process connects, prepares its statements, loads code.
        measure_http(port, token, accounts, clients=args.clients, seconds=1, batch=False)
        raw = drawdown.measure("raw", args.raw_procs, False, wallet_ids, args.seconds, url, revenue)
        single = measure_http(
            port, token, accounts, clients=args.clients, seconds=args.seconds, batch=False
        )
        batch = measure_http(
            port, token, accounts, clients=args.clients, seconds=args.seconds, batch=True
        )
        if args.ceiling:
            for name, path, is_batch, target in (
                ("ceiling: HTTP + draw-down only, single", "/bench/draw-down", False, 0.3),
                (f"ceiling: HTTP + draw-down only, batch of {BATCH_SIZE}",
                 "/bench/draw-down-batch", True, 2.0),
            ):  # fmt: skip
                result = measure_http(port, token, accounts, clients=args.clients,
                                      seconds=args.seconds, batch=is_batch, path=path)  # fmt: skip
                ceilings.append((name, result, target))
    finally:
        stop_gunicorn(server)
        signal.alarm(0)

    print()
    print(f"gunicorn: {args.workers} processes ({args.worker_class}, {args.threads} thread(s)), "
          f"{args.clients} HTTP client processes, {args.raw_procs} raw-SQL processes, "
          f"{args.seconds:.0f} s each, {len(wallet_ids)} wallets with history")  # fmt: skip
    print()
    print("| path | events/s | requests | p50 ms | p95 ms | ratio to raw SQL | target | statuses |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    print(f"| raw SQL single draw-down | {raw:,.0f} | | | | 1.00 | | |")
    for name, result, target in (
        ("HTTP single event", single, 0.3),
        (f"HTTP batch of {BATCH_SIZE}", batch, 2.0),
        *ceilings,
    ):
        ratio = result["events_per_s"] / raw
        verdict = "met" if ratio >= target else "NOT met"
        print(f"| {name} | {result['events_per_s']:,.0f} | {result['requests']:,} | "
              f"{result['p50_ms']:.1f} | {result['p95_ms']:.1f} | {ratio:.2f} | "
              f"≥ {target} ({verdict}) | {result['statuses']} |")  # fmt: skip
    drawdown.setup_django()
    from django.core.management import call_command

    call_command("check_ledger")
    failed = {
        s for r in (single, batch, *(c[1] for c in ceilings)) for s in r["statuses"] if s != 200
    }
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
