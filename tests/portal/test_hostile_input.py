"""Hostile input to the portal: a form error (400) or a plain 400, never a 500."""

import pytest
from django.test import Client

from billing.models import Customer

pytestmark = pytest.mark.django_db

HOSTILE_TEXT = {
    "NUL": "\x00",
    "NUL inside": "5\x00, 10",
    "huge": "1e22",
    "huge exponent": "1E+999999",
    "tiny exponent": "1E-999999",
    "40 digits": "9" * 40,
    "NaN": "NaN",
    "Infinity": "Infinity",
    "negative": "-5",
    "oversized": "5, " * 10_000,
    "control characters": "\x1b[31m5",
}


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(alice.portal_users.get().user)
    return client


@pytest.mark.parametrize("field", ["low_funds_thresholds", "credit_limit_warnings"])
def test_hostile_thresholds_are_a_form_error_and_change_nothing(alice_client, alice, field):
    wrong = []
    for name, value in HOSTILE_TEXT.items():
        response = alice_client.post("/portal/alerts/", {field: value})
        if response.status_code != 400 or not response.context["form"].errors.get(field):
            wrong.append(f"{name}: {response.status_code}")
    assert wrong == []
    saved = Customer.objects.get(pk=alice.pk)
    assert (saved.low_funds_thresholds, saved.credit_limit_warnings) == ("", "")


@pytest.mark.parametrize(
    "url",
    ["/portal/?x=%00", "/portal/transactions/?page=%00", "/portal/documents/?page=%00",
     "/portal/alerts/?%00=1", "/portal/documents/%00/pdf/", "/portal/%00/"],
)  # fmt: skip
def test_a_nul_in_the_url_is_a_400_that_says_so(alice_client, url):
    response = alice_client.get(url)

    assert response.status_code == 400, (url, response.status_code)
    assert "NUL character" in response.content.decode()


def test_a_nul_in_the_login_form_is_a_form_error():
    response = Client(raise_request_exception=False).post(
        "/portal/login/", {"username": "alice\x00", "password": "x\x00"}
    )

    assert response.status_code in {200, 400}
    assert "errorlist" in response.content.decode() or "error" in response.content.decode()
