"""Both sign-in pages, as fixtures: the portal's (customers) and the admin's (staff)."""

from dataclasses import dataclass

import pytest
from django.test import Client

from tests.factories import UserFactory, customer_with_login

PASSWORD = "s3cret-pass"  # tests.factories.UserFactory's password


@dataclass
class SignIn:
    name: str
    url: str
    username: str
    base_template: str  # the page is in this site's style

    def post(self, client: Client, password: str, *, username: str | None = None, **extra):
        return client.post(
            self.url,
            {"username": self.username if username is None else username, "password": password},
            **extra,
        )

    def fail(self, client: Client, times: int, **extra):
        """`times` wrong passwords in a row; the last answer."""
        response = None
        for _ in range(times):
            response = self.post(client, "wrong-password", **extra)
        return response


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """These tests check hundreds of passwords: the production hasher costs ~0.5 s each
    here, and what is under test is the counting, not the hash."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(params=["portal", "admin"])
def sign_in(request, db) -> SignIn:
    if request.param == "portal":
        customer_with_login("alice")
        return SignIn("portal", "/portal/login/", "alice", "portal/base.html")
    UserFactory(username="root", is_staff=True, is_superuser=True)
    return SignIn("admin", "/admin/login/", "root", "admin/base_site.html")
