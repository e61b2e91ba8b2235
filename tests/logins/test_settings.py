"""Lockout settings come from the environment, with defaults for a laptop."""

import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth import authenticate
from django.test import RequestFactory

from config.logins.lockout import lockout_response
from tests.factories import UserFactory

READ = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.AXES_ENABLED, s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), "
    "s.TRUSTED_PROXY_COUNT)"
)


def read_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOGIN_", "TRUSTED_"))}
    return subprocess.run(
        [sys.executable, "-c", READ],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_and_environment():
    assert read_settings().stdout.split() == ["True", "5", "900.0", "0"]
    overridden = read_settings(
        LOGIN_LOCKOUT_ENABLED="false",
        LOGIN_FAILURE_LIMIT="10",
        LOGIN_LOCKOUT_MINUTES="60",
        TRUSTED_PROXY_COUNT="1",
    )
    assert overridden.stdout.split() == ["False", "10", "3600.0", "1"]


def test_a_lockout_of_zero_minutes_is_refused_at_start():
    result = read_settings(LOGIN_LOCKOUT_MINUTES="0")
    assert result.returncode != 0
    assert "LOGIN_LOCKOUT_MINUTES must be at least 1" in result.stderr


@pytest.mark.django_db
def test_a_lockout_outside_a_sign_in_page_still_says_until_when():
    """Should anything else ever authenticate with a password, its lockout is a
    plain 429 with the same message (there is no form to put it on)."""
    UserFactory(username="alice")
    for _ in range(5):
        request = RequestFactory().post("/elsewhere/", REMOTE_ADDR="203.0.113.7")
        assert authenticate(request, username="alice", password="wrong") is None
    assert request.axes_locked_out

    response = lockout_response(request, None, {"username": "alice"})

    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/plain")
    assert re.match(r"Too many failed .* try again after \d\d:\d\d UTC \(in 15 minutes\)\.$",
                    response.content.decode())  # fmt: skip
