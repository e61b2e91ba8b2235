"""`make run`'s process manager (config/supervise.py), as a real process: a command
that exits is started again while the others keep running; SIGINT (Ctrl-C) stops
every process, children included."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.celery_processes import wait_for

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_a_process_that_exits_is_restarted_and_ctrl_c_stops_all(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        # a steady process that forks a child (as gunicorn and Celery do)
        f"steady: sleep 300 & echo $! > {pids}/steady-child; echo $$ > {pids}/steady; wait\n"
        # one that dies a moment after each start
        f"flaky: echo started; echo $$ >> {pids}/flaky; sleep 0.3; exit 3\n"
    )
    log = (tmp_path / "out.log").open("w")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "config.supervise", "-f", str(procfile), "--first-delay", "0.2"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: (pids / "steady-child").exists() and (pids / "steady").exists(),
                 timeout=10, message="steady did not start")  # fmt: skip
        steady = int((pids / "steady").read_text())
        child = int((pids / "steady-child").read_text())
        wait_for(
            lambda: (pids / "flaky").exists() and len((pids / "flaky").read_text().split()) >= 3,
            timeout=15,
            message=lambda: (tmp_path / "out.log").read_text(),
        )
        assert alive(steady) and alive(child), "a process died because another one exited"
        assert supervisor.poll() is None

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=15) == 0
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
    output = (tmp_path / "out.log").read_text()
    assert "flaky exited with code 3" in output
    assert "restarting it in" in output
    assert "all processes stopped" in output
    assert output.count("flaky      | started") >= 3
    deadline = time.monotonic() + 5
    while (alive(steady) or alive(child)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(steady) and not alive(child), "Ctrl-C left a process running"
