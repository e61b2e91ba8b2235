import pytest

from tests.factories import UserFactory


@pytest.mark.django_db
def test_portal_requires_login(client):
    response = client.get("/portal/")
    assert response.status_code == 302
    assert "/portal/login/" in response["Location"]


@pytest.mark.django_db
def test_login_without_customer_gets_a_clear_403(client):
    user = UserFactory(username="stranger")
    client.force_login(user)
    response = client.get("/portal/")
    assert response.status_code == 403
    assert b"not linked to a customer" in response.content
