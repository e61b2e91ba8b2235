"""`celery -A config worker ...`, with extra broker transport options for tests from
TEST_TRANSPORT_OPTIONS ("visibility_timeout=3,unacked_restore_interval=1"): a short
visibility timeout lets a test watch a killed worker's task come back."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config.celery import app  # noqa: E402

extra = {
    name: int(value)
    for name, value in (
        part.split("=", 1)
        for part in os.environ.get("TEST_TRANSPORT_OPTIONS", "").split(",")
        if part
    )
}
app.conf.broker_transport_options = {**app.conf.broker_transport_options, **extra}
app.worker_main(["worker", *sys.argv[1:]])
