"""Settings for the test suite: the production settings, over plain HTTP and
without a collectstatic manifest. Everything else (PostgreSQL, Redis) is real."""

import os

os.environ.setdefault("HTTPS", "false")
os.environ.setdefault("STATIC_MANIFEST", "false")

from config.settings import *  # noqa: E402,F403
