"""schemathesis over the API's own OpenAPI document: every generated request, valid
or not, gets a documented status with a body that matches its documented schema,
never a 5xx; requests the schema calls valid are accepted (see schemathesis.toml for
the one documented exception: usage events naming customers that do not exist).

Through the WSGI app in this process, on the test database, with a customer, a
product and a price that the schema's own examples name, so the examples book.
Bounded and derandomised by schemathesis.toml.
"""

from decimal import Decimal
from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from config.wsgi import application
from tests.factories import CustomerFactory
from wallets.ledger_check import find_problems

ROOT = Path(__file__).resolve().parents[2]
CONFIG = SchemathesisConfig.from_path(ROOT / "schemathesis.toml")


# Loaded once, at collection (the document needs no database).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", application, config=CONFIG)


@pytest.fixture
def keep_the_test_connection(db):
    """As Django's test client does: a request must not close the test's database
    connection (its transaction holds the test data)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(db, calls, price, credit):
    """An API key, and the customer and product the schema's examples name."""
    from billing.models import ApiKey

    customer = CustomerFactory(account_number="A0000001", currency="USD")
    price(calls, "0.5")
    credit(customer, "1000000")
    _key, token = ApiKey.issue(name="schemathesis", created_by="tests")
    return token


@schema.parametrize()
# The customer, key and credit are set up once per operation on purpose: every case
# runs against the same data (and may book on it); the test transaction undoes it all.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_api_does_what_its_schema_says(case, token, keep_the_test_connection):
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
    assert find_problems() == []


def test_the_schema_documents_every_status_and_constraint(client):
    """What schemathesis found undocumented before: 401, 413/415 and 422 where the
    schema listed other codes; a batch's 1..1000 events."""
    document = client.get("/api/v1/openapi.json").json()
    operations = {
        (method, path): op
        for path, methods in document["paths"].items()
        for method, op in methods.items()
    }
    for (method, path), op in operations.items():
        statuses = set(op["responses"])
        if path != "/api/v1/health":
            assert {"401", "422", "500"} <= statuses, (method, path, statuses)
        if method == "post" and "requestBody" in op:
            assert {"400", "413", "415"} <= statuses, (method, path, statuses)
        for status, answer in op["responses"].items():
            assert answer["description"], (method, path, status)
    batch = operations[("post", "/api/v1/usage/batch")]["requestBody"]["content"]
    events = batch["application/json"]["schema"]
    events = document["components"]["schemas"][events["$ref"].rsplit("/", 1)[1]]
    assert events["properties"]["events"]["minItems"] == 1
    assert events["properties"]["events"]["maxItems"] == 1000
    event = document["components"]["schemas"]["UsageEventIn"]
    assert event["additionalProperties"] is False
    assert Decimal(event["properties"]["quantity"]["anyOf"][1]["exclusiveMaximum"]) == Decimal(
        "1e12"
    )
