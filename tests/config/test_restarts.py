"""Issue 14: the whole stack recovers by itself when PostgreSQL or Redis goes away
and comes back, under load, and the money holds.

A real gunicorn, Celery worker and beat run against a private PostgreSQL and
Redis (tests/outage_stack.py). Several clients send usage events, each retrying
the same event id until it is acknowledged (2xx), the way the API asks
(`Retry-After`). Mid-run PostgreSQL is stopped with `pg_ctl stop -m immediate`
(or Redis is SIGKILLed) and started again a few seconds later; no process of the
stack is touched. Then:
- every acknowledged event is booked exactly once and nothing else is booked; the
  wallet moved by exactly booked × price; `check_ledger` is clean;
- the only 5xx answers are 503 (no traceback, no 500), and none at all for a
  request sent after the server was back (a stale connection costs nothing);
- the API answers 2xx again, and the scheduled job runs again, within seconds.
Each test writes what it saw to test-artifacts/restarts-<fault>.json (requests in
flight at the fault, 5xx seen by status, booked, duplicates, seconds until the API
and the beat were healthy again)."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.celery_processes import ROOT, current_database_url, wait_for
from tests.outage_stack import CREDIT, UNIT_PRICE, Stack

# django_db: so that django_db_setup creates the test database this module copies
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

CLIENTS = 6
OUTAGE = 3.0  # seconds the server stays down
RECOVERY_LIMIT = 15.0  # the API must answer 2xx within this long after the restart
JOB_LIMIT = 30.0  # ...and the scheduled job run again within this long
CLIENT_GIVE_UP = 60.0  # a client stops retrying one event after this long


@pytest.fixture(scope="module")
def stack(django_db_setup) -> Iterator[Stack]:
    # Not under pytest's tmp folder: other pytest runs set it to 0700 again, and the
    # server and pg_ctl run as the embedded_postgres user (as config.devservers --tmp).
    folder = Path(tempfile.mkdtemp(prefix="prepaid-outage-"))
    stack = Stack(folder)
    try:
        stack.start(current_database_url())  # a copy of the migrated test database
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Request:
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no answer (connection refused or reset)
    error: str = ""


@dataclass
class Client:
    """Sends one event at a time, retrying the same event id until a 2xx."""

    stack: Stack
    prefix: str
    stop: threading.Event
    requests: list[Request] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    bodies: list[str] = field(default_factory=list)

    def run(self) -> None:
        n = 0
        connection = self._connect()
        while not self.stop.is_set():
            event_id = f"{self.prefix}-{n}"
            n += 1
            body = json.dumps({"event_id": event_id, "customer": self.stack.customer,
                               "product": "api-calls", "quantity": "1"})  # fmt: skip
            first_try = time.monotonic()
            while True:
                request = Request(started=time.time())
                self.requests.append(request)
                wait = 0.0
                try:
                    connection.request("POST", "/api/v1/usage", body, {
                        "Authorization": f"Bearer {self.stack.token}",
                        "Content-Type": "application/json"})  # fmt: skip
                    response = connection.getresponse()
                    answer = response.read().decode(errors="replace")
                    request.status = response.status
                    wait = float(response.getheader("Retry-After") or 0)
                except (OSError, http.client.HTTPException) as exc:
                    request.error = type(exc).__name__
                    connection.close()
                    connection = self._connect()
                    wait = 0.2
                request.ended = time.time()
                if request.status is not None and 200 <= request.status < 300:
                    self.acknowledged.append(event_id)
                    break
                if request.status is not None and request.status >= 500:
                    self.bodies.append(answer[:300])
                if time.monotonic() - first_try > CLIENT_GIVE_UP:
                    self.gave_up.append(event_id)
                    break
                time.sleep(min(wait, 0.25) or 0.05)  # honour Retry-After, briefly

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.stack.port, timeout=30)


def run_fault(
    stack: Stack, name: str, *, stop, start, artifacts: Path, beat_says: str, lines: int
) -> dict:
    """`beat_says`: the line each beat that noticed the outage logs once (`lines` of them)."""
    assert stack.all_running()
    said_before = stack.beat_log_count(beat_says)
    halt = threading.Event()
    clients = [Client(stack, f"{name}-{n}", halt) for n in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    booked_before = count_booked(stack)
    for thread in threads:
        thread.start()
    time.sleep(2)  # under load before the fault

    fault_at = time.time()
    stop()
    time.sleep(OUTAGE)
    start()
    back_at = time.time()  # the server accepts connections again

    api_healthy = wait_for(
        lambda: first_success_after(clients, back_at), timeout=RECOVERY_LIMIT, every=0.05,
        message=lambda: f"no 2xx within {RECOVERY_LIMIT}s of the restart" + stack.log("web"),
    )  # fmt: skip
    wait_for(lambda: stack.job_runs_since(back_at), timeout=JOB_LIMIT, every=0.1,
             message=lambda: "the scheduled job did not run after the restart"
             + stack.log("beat") + stack.log("worker"))  # fmt: skip
    job_ran = first_job_run_after(stack, back_at)
    time.sleep(3)  # more load, and more ticks, after the recovery
    halt.set()
    for thread in threads:
        thread.join(timeout=CLIENT_GIVE_UP + 30)

    requests = [r for c in clients for r in c.requests]
    acknowledged = [e for c in clients for e in c.acknowledged]
    rows = stack.query(
        "SELECT event_id, count(*), count(transaction_id) FROM billing_usageevent"
        " WHERE event_id LIKE %s AND status = 'booked' GROUP BY event_id", (f"{name}-%",))  # fmt: skip
    booked = {event_id: n for event_id, n, _ in rows}
    server_errors = Counter(r.status for r in requests if r.status and r.status >= 500)
    report = {
        "fault": name,
        "clients": CLIENTS,
        "outage_seconds": OUTAGE,
        "requests": len(requests),
        "in_flight_at_fault": sum(1 for r in requests if r.started <= fault_at < r.ended),
        "5xx_by_status": dict(server_errors),
        "no_answer": sum(1 for r in requests if r.status is None),
        "acknowledged": len(acknowledged),
        "booked": sum(booked.values()),
        "duplicates": sum(n - 1 for n in booked.values() if n > 1),
        "booked_not_acknowledged": len(set(booked) - set(acknowledged)),
        "gave_up": sum(len(c.gave_up) for c in clients),
        "api_healthy_after_s": round(api_healthy - back_at, 2),
        "beat_healthy_after_s": round(job_ran - back_at, 2),
        "5xx_after_restart": sum(
            1 for r in requests if r.started > back_at and r.status and r.status >= 500
        ),
        "beat_outage_lines": stack.beat_log_count(beat_says) - said_before,
    }
    sends = [(moment, beat) for moment, beat in stack.sends() if moment > fault_at - 2]
    (artifacts / f"restarts-{name}.json").write_text(json.dumps(report, indent=2) + "\n")

    assert report["gave_up"] == 0, report
    assert len(acknowledged) == len(set(acknowledged)), "an event acknowledged twice"
    assert set(booked) == set(acknowledged), report  # every acknowledged event, nothing else
    assert report["duplicates"] == 0, report
    assert all(n == 1 for _, _, n in rows), "a booked event without its ledger transaction"
    assert set(server_errors) <= {503}, (report, [b for c in clients for b in c.bodies][:3])
    assert not any("Traceback" in b for c in clients for b in c.bodies)
    assert report["5xx_after_restart"] == 0, report  # a stale connection costs no request
    assert stack.all_running(), "a process of the stack exited" + stack.log("beat-1")
    assert report["beat_outage_lines"] == lines, ("one line per outage and beat", report)
    # exactly one beat sends: the job (every second) is never sent twice within 0.5 s
    gaps = [b[0] - a[0] for a, b in zip(sends, sends[1:], strict=False)]
    assert sends and min(gaps, default=1) > 0.5, sends
    spent = CREDIT - stack.query("SELECT credit_balance FROM wallets_wallet WHERE id = %s",
                                 (stack.wallet,))[0][0]  # fmt: skip
    assert spent == (booked_before + report["booked"]) * UNIT_PRICE, (spent, report)
    ledger = subprocess.run([sys.executable, "manage.py", "check_ledger"], cwd=ROOT,
                            env=stack.env(), capture_output=True, text=True, check=False)  # fmt: skip
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr
    return report


def count_booked(stack: Stack) -> int:
    return stack.query("SELECT count(*) FROM billing_usageevent WHERE status = 'booked'")[0][0]


def first_success_after(clients: list[Client], moment: float) -> float | None:
    times = [
        r.ended for c in clients for r in list(c.requests)
        if r.started > moment and r.status is not None and 200 <= r.status < 300
    ]  # fmt: skip
    return min(times) if times else None


def first_job_run_after(stack: Stack, moment: float) -> float:
    ((started,),) = stack.query(
        "SELECT extract(epoch FROM min(started_at))::float FROM jobs_jobrun"
        " WHERE job_name = 'send_notifications' AND status = 'succeeded'"
        " AND started_at > to_timestamp(%s)", (moment,))  # fmt: skip
    return started


def test_postgresql_stopped_immediately_and_restarted(stack, artifacts_dir):
    report = run_fault(stack, "postgresql", stop=stack.stop_postgres_immediately,
                       start=stack.start_postgres, artifacts=Path(artifacts_dir),
                       beat_says="the database is unavailable", lines=2)  # fmt: skip
    assert report["5xx_by_status"], "the outage was not seen at all"


def test_redis_killed_and_restarted(stack, artifacts_dir):
    run_fault(stack, "redis", stop=stack.kill_redis, start=stack.start_redis,
              artifacts=Path(artifacts_dir), beat_says="the broker refused", lines=1)  # fmt: skip
