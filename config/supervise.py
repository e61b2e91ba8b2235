"""Run the processes of a Procfile, restart any that exits, stop them all on Ctrl-C.

    python -m config.supervise [-f Procfile]

What `make run` uses in place of honcho, which stops everything when one process
exits: here the others keep running, and the one that exited is started again
after a short wait (1 s, doubling up to 30 s while it keeps dying within 30 s of
its start, so a broken command does not spin). Each line a process prints is
shown prefixed with the time and its name, as honcho does.

Each command runs under `/bin/sh -c` in a session of its own (so `${PORT:-8000}`
works, and a signal reaches the whole command: gunicorn's or Celery's children
too). Ctrl-C (SIGINT) or SIGTERM sends SIGTERM to every process group, waits up to
10 s, then SIGKILLs what is left, and exits; `config.devservers run` then stops
PostgreSQL and Redis.

In production a real process manager (systemd, Kubernetes, supervisord) does this
job; see README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

STOP_TIMEOUT = 10.0
MAX_DELAY = 30.0
HEALTHY_AFTER = 30.0  # a process that ran this long restarts after the first delay again

_print_lock = threading.Lock()


def say(name: str, text: str, width: int = 10) -> None:
    with _print_lock:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{width}} | {text}\n")
        sys.stdout.flush()


def read_procfile(path: Path) -> dict[str, str]:
    commands: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        commands[name.strip()] = command.strip()
    return commands


@dataclass
class Process:
    name: str
    command: str
    first_delay: float
    popen: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None
    pumps: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.popen = subprocess.Popen(  # noqa: S603 (the commands of our own Procfile)
            ["/bin/sh", "-c", self.command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        say("supervise", f"{self.name} started (pid {self.popen.pid})")
        pump = threading.Thread(target=self._pump, args=(self.popen,), daemon=True)
        pump.start()
        self.pumps.append(pump)

    def _pump(self, popen: subprocess.Popen) -> None:
        assert popen.stdout is not None
        for raw in iter(popen.stdout.readline, b""):
            say(self.name, raw.decode(errors="replace").rstrip("\n"))

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    def __init__(self, commands: dict[str, str], *, first_delay: float = 1.0) -> None:
        self.processes = [Process(n, c, first_delay) for n, c in commands.items()]
        self.stopping = threading.Event()

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        for process in self.processes:
            process.start()
        while not self.stopping.is_set():
            self._watch()
            self.stopping.wait(0.2)
        return self._stop_all()

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping.set()

    def _watch(self) -> None:
        now = time.monotonic()
        for process in self.processes:
            if process.restart_at is not None:
                if now >= process.restart_at:
                    process.start()
                continue
            assert process.popen is not None
            code = process.popen.poll()
            if code is None:
                continue
            # whatever it forked (a pool child) goes with it, so the new one starts clean
            process.signal_group(signal.SIGKILL)
            ran = now - process.started_at
            if ran >= HEALTHY_AFTER or process.delay == 0:
                process.delay = process.first_delay
            else:
                process.delay = min(process.delay * 2, MAX_DELAY)
            process.restart_at = now + process.delay
            say("supervise", f"{process.name} exited with code {code} after {ran:.0f} s; "
                             f"restarting it in {process.delay:g} s (the others keep running)")  # fmt: skip

    def _stop_all(self) -> int:
        say("supervise", "stopping every process")
        for process in self.processes:
            if process.running():
                process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(p.running() for p in self.processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        for process in self.processes:
            if process.running():
                say("supervise", f"{process.name} did not stop within {STOP_TIMEOUT:g} s: SIGKILL")
            process.signal_group(signal.SIGKILL)
            if process.popen is not None:
                process.popen.wait()
        for process in self.processes:
            for pump in process.pumps:
                pump.join(timeout=1)
        say("supervise", "all processes stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.supervise")
    parser.add_argument("-f", "--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument("--first-delay", type=float, default=1.0,
                        help="seconds before the first restart of a process that exited")  # fmt: skip
    args = parser.parse_args(argv)
    return Supervisor(read_procfile(args.procfile), first_delay=args.first_delay).run()


if __name__ == "__main__":
    sys.exit(main())
