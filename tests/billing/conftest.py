"""localstripe (a fake Stripe) for the Stripe tests, plus signing and Celery helpers.

One localstripe per pytest process, so each pytest-xdist worker has its own, on
127.0.0.1 and a port the server picks itself. It is stopped at the end of the
session even when tests fail. The tests fail, never skip, when localstripe is
not installed: `make test` installs it (`.ci/localstripe.sh install`).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing.stripe import effects as stripe_effects
from tests.billing.stripe_fakes import API_KEY, WEBHOOK_SECRET, FakeStripe

ROOT = Path(__file__).resolve().parents[2]
LOCALSTRIPE_PYTHON = ROOT / ".venv-localstripe" / "bin" / "python"
SERVER_SCRIPT = Path(__file__).with_name("localstripe_server.py")


def _read_port(process: subprocess.Popen, log: Path, timeout: float) -> int:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    if not selector.select(timeout):
        raise RuntimeError(f"localstripe printed no port within {timeout}s:\n{log.read_text()}")
    line = process.stdout.readline().strip()
    if not line.isdigit():
        raise RuntimeError(f"localstripe did not start ({line!r}):\n{log.read_text()}")
    return int(line)


def _wait_until_answers(url: str, timeout: float) -> None:
    request = urllib.request.Request(
        f"{url}/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory) -> Iterator[str]:
    """The base URL of a localstripe started for this pytest process."""
    if not LOCALSTRIPE_PYTHON.exists():
        pytest.fail(
            f"localstripe is not installed ({LOCALSTRIPE_PYTHON} is missing): "
            "run `bash .ci/localstripe.sh install` (`make test` does)."
        )
    log = tmp_path_factory.mktemp("localstripe") / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(LOCALSTRIPE_PYTHON), str(SERVER_SCRIPT)],
            stdout=subprocess.PIPE,
            stderr=log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        url = f"http://127.0.0.1:{_read_port(process, log, timeout=30)}"
        _wait_until_answers(url, timeout=30)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def stripe_settings(settings, localstripe):
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = localstripe
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_MAX_NETWORK_RETRIES = 0  # our own retries are what the tests look at
    settings.STRIPE_TIMEOUT = 10
    return settings


@pytest.fixture
def fake_stripe(stripe_settings, localstripe) -> Iterator[FakeStripe]:
    fake = FakeStripe(localstripe)
    yield fake
    fake.clear_faults()
    fake.stop_webhooks()


@pytest.fixture
def eager_celery():
    """Run tasks in the calling thread (what a worker would do), errors propagating."""
    from config.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@pytest.fixture
def effects(monkeypatch):
    """Counts the calls into billing.stripe.effects (the wallets glue) by kind."""
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(
        stripe_effects, "on_charge_succeeded", lambda c: calls.append(("succeeded", c.pk))
    )
    monkeypatch.setattr(
        stripe_effects, "on_charge_failed", lambda c: calls.append(("failed", c.pk))
    )
    monkeypatch.setattr(
        stripe_effects, "on_charge_refunded", lambda c, amount: calls.append(("refunded", c.pk))
    )
    return calls


# --- usage, catalogue and API keys ---------------------------------------------------


@pytest.fixture
def calls(db):
    """A product item: API calls."""
    from billing.models import ProductItem

    return ProductItem.objects.create(code="api-calls", name="API calls", unit="call")


@pytest.fixture
def price(db):
    """price(item, "0.5", dimensions={"region": "eu"}, effective_from=..., currency="USD")."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from billing.models import Price

    def make(item, unit_price, **fields):
        fields.setdefault("currency", "USD")
        fields.setdefault("effective_from", timezone.now() - timedelta(days=30))
        return Price.objects.create(product_item=item, unit_price=Decimal(unit_price), **fields)

    return make


@pytest.fixture
def credit(db):
    """credit(customer, "10", **grant_credit kwargs) → an active grant in the customer's
    wallet, effective since yesterday (usage is drawn at its own timestamp)."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from wallets import services
    from wallets.actors import Actor

    counter = iter(range(1, 10_000))

    def make(customer, amount, **kwargs):
        kwargs.setdefault("kind", "paid")
        kwargs.setdefault("name", f"Credits {amount}")
        kwargs.setdefault("effective_at", timezone.now() - timedelta(days=1))
        wallet = services.open_wallet(customer=customer)
        return services.grant_credit(
            wallet=wallet,
            amount=Decimal(amount),
            actor=Actor.system("tests"),
            idempotency_key=f"test-grant-{next(counter)}",
            **kwargs,
        )

    return make


@pytest.fixture
def api_key(db):
    """An unrestricted API key and its token: (key, token)."""
    from billing.models import ApiKey

    return ApiKey.issue(name="metering", created_by="tests")


@pytest.fixture
def api(api_key):
    """A test client that sends the API key."""
    from django.test import Client

    _key, token = api_key
    return Client(headers={"Authorization": f"Bearer {token}"})
