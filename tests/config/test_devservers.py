"""config.devservers starts, reuses and stops the wheel-provided servers."""

import os
import subprocess
import sys

import psycopg
import redis

from config import devservers


def test_up_reuse_and_down_in_a_temp_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    folder = tmp_path / "srv"
    servers = devservers.up(folder, throwaway=True)
    try:
        assert servers.started == ["postgres", "redis"]
        db_url = servers.env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] == "app"
        assert redis.Redis.from_url(servers.env["REDIS_URL"]).ping()
        # a second `up` reuses the running servers
        again = devservers.up(folder, throwaway=True)
        assert again.env == servers.env
        # nothing listens on TCP: the servers only have unix sockets
        assert (folder / "redis.sock").exists()
    finally:
        devservers.down(folder)
    assert not (folder / "pgdata" / "postmaster.pid").exists()
    assert devservers._pid_alive(folder / "redis.pid") is None


def test_run_uses_given_urls_and_starts_nothing(tmp_path):
    env = {**os.environ, "DATABASE_URL": "postgres://x@/y", "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run(
        [sys.executable, "-m", "config.devservers", "run", "--dir", str(tmp_path), "--",
         "sh", "-c", "echo $DATABASE_URL $REDIS_URL"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["postgres://x@/y", "redis://127.0.0.1:1/0"]
    assert not (tmp_path / "pgdata").exists()


def test_run_passes_the_exit_code_through(tmp_path):
    env = {**os.environ, "DATABASE_URL": "postgres://x@/y", "REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [sys.executable, "-m", "config.devservers", "run", "--dir", str(tmp_path), "--", "false"],
        env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 1
