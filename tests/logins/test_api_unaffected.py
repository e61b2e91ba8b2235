"""The API signs in with bearer keys, not passwords: lockouts neither count its
refusals nor stop it."""

import pytest
from django.test import Client

from config.logins.models import FailedSignIn
from tests.billing.conftest import api_key  # noqa: F401 - fixture
from tests.factories import customer_with_login
from tests.logins.conftest import PASSWORD, signed_in

pytestmark = pytest.mark.django_db


def test_bad_api_keys_lock_nobody_out(client, sign_in):
    alice = customer_with_login("carol")
    robot = Client(headers={"Authorization": "Bearer ppk_wrong-key"})
    for _ in range(20):
        response = robot.get(f"/api/v1/customers/{alice.account_number}/balance")
        assert response.status_code == 401
    assert not FailedSignIn.objects.exists()
    assert sign_in.post(client, PASSWORD).status_code == 302
    assert signed_in(client)


def test_a_locked_address_still_reaches_the_api(client, sign_in, api_key):  # noqa: F811
    _key, token = api_key
    alice = customer_with_login("carol")
    sign_in.fail(client, 5)  # from 127.0.0.1, the test client's address
    assert sign_in.post(client, PASSWORD).status_code == 429

    api = Client(headers={"Authorization": f"Bearer {token}"})
    response = api.get(f"/api/v1/customers/{alice.account_number}/balance")

    assert response.status_code == 200
    assert response.json()
