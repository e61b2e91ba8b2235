"""Real Celery workers and beats as subprocesses, against the test database and the
Redis of this test run, each on a queue of its own (pytest-xdist workers share
Redis). Every process starts in its own session so a test can SIGKILL the whole
process group; `stop_all` kills whatever is left, always."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
WORKER_SCRIPT = Path(__file__).with_name("celery_worker.py")


def current_database_url() -> str:
    """DATABASE_URL of the database this test runs against (test_app, test_app_gw0…)."""
    s = connection.settings_dict
    user = quote(s["USER"] or "postgres")
    password = f":{quote(s['PASSWORD'])}" if s["PASSWORD"] else ""
    name = quote(s["NAME"])
    # a unix-socket directory arrives as ?host=… and so lives in OPTIONS
    host = s["HOST"] or s["OPTIONS"].get("host", "")
    port = s["PORT"] or s["OPTIONS"].get("port", "")
    if not host or host.startswith("/"):
        netloc_port = f":{port}" if port else ""
        return f"postgres://{user}{password}@{netloc_port}/{name}?host={host}"
    return f"postgres://{user}{password}@{host}:{port or 5432}/{name}"


def subprocess_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": current_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@dataclass
class Processes:
    folder: Path
    queue: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:12]}")
    started: list[subprocess.Popen] = field(default_factory=list)

    def _start(
        self, name: str, args: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen, Path]:
        log = self.folder / f"{name}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                args,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process, log

    def worker(self, name: str = "worker", **transport: int) -> tuple[subprocess.Popen, Path]:
        """`celery -A config worker --concurrency 1` on this test's queue; `transport`
        adds broker transport options (e.g. a short visibility timeout)."""
        args = [
            sys.executable, str(WORKER_SCRIPT), "--concurrency", "1", "--pool", "prefork",
            "-Q", self.queue, "-n", f"{name}-{self.queue}@%h", "--loglevel", "INFO",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        env = subprocess_env(
            TEST_TRANSPORT_OPTIONS=",".join(f"{k}={v}" for k, v in transport.items())
        )
        return self._start(name, args, env)

    def beat(self, name: str, max_interval: int = 1) -> tuple[subprocess.Popen, Path]:
        args = [
            sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", os.environ.get("TEST_BEAT_LOGLEVEL", "INFO"),
            "--scheduler", "jobs.beat:LeaderDatabaseScheduler",
            "--max-interval", str(max_interval),
            "--pidfile", str(self.folder / f"{name}.pid"),
            "--schedule", str(self.folder / f"{name}-schedule"),
        ]  # fmt: skip
        return self._start(name, args, subprocess_env())

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL the process and everything it forked (the prefork pool)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                self.kill(process)
            else:  # the group may outlive its leader (pool children)
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def wait_for(condition, *, timeout: float, message, every: float = 0.05):
    """Poll `condition` until it is truthy; `message` may be a callable, so the
    failure can describe the state at the moment of the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s: {text}")
        time.sleep(every)


def wait_for_log(log: Path, text: str, *, timeout: float) -> None:
    wait_for(
        lambda: text in log.read_text(errors="replace"),
        timeout=timeout,
        message=f"{text!r} never appeared in {log}:\n{log.read_text(errors='replace')[-3000:]}",
        every=0.1,
    )
