"""Which address a lockout counts against: REMOTE_ADDR unless trusted proxies are
configured (TRUSTED_PROXY_COUNT), and never an address the client wrote itself."""

import pytest
from django.test import RequestFactory

from config.logins.lockout import client_ip
from tests.logins.conftest import PASSWORD, signed_in

pytestmark = pytest.mark.django_db

PROXY = "10.0.0.5"


def address(settings, proxies: int, remote: str, forwarded: str | None = None) -> str | None:
    settings.TRUSTED_PROXY_COUNT = proxies
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_ip(RequestFactory().post("/portal/login/", **extra))


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        (0, "203.0.113.7", None, "203.0.113.7"),
        (0, "203.0.113.7", "198.51.100.1", "203.0.113.7"),  # no proxy: the header is the client's
        (1, PROXY, "198.51.100.1", "198.51.100.1"),
        (
            1,
            PROXY,
            "6.6.6.6, 198.51.100.1",
            "198.51.100.1",
        ),  # left of what the proxy wrote: ignored
        (2, PROXY, "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"),
        (1, PROXY, "198.51.100.1:51234", "198.51.100.1"),
        (1, PROXY, "[2001:db8::1]:443", "2001:db8::1"),
        (1, PROXY, "2001:DB8:0::1", "2001:db8::1"),
        (1, PROXY, None, PROXY),  # not through the proxy (or it wrote nothing)
        (2, PROXY, "198.51.100.1", PROXY),  # fewer hops than proxies: not theirs
        (1, PROXY, "not-an-address", PROXY),
        (1, PROXY, "198.51.100.1\x00", PROXY),
    ],
)
def test_the_address_counted(settings, proxies, remote, forwarded, expected):
    assert address(settings, proxies, remote, forwarded) == expected


def test_without_a_proxy_setting_a_forged_header_does_not_escape_the_lock(client, sign_in):
    for n in range(5):
        sign_in.post(
            client, "wrong", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}"
        )
    response = sign_in.post(
        client, PASSWORD, REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="192.0.2.200"
    )
    assert response.status_code == 429


def test_behind_a_proxy_clients_are_told_apart(client, sign_in, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for name in ["m1", "m2", "m3", "m4", "m5"]:
        sign_in.post(client, "guess", username=name, REMOTE_ADDR=PROXY,
                     HTTP_X_FORWARDED_FOR="198.51.100.66")  # fmt: skip

    # The attacker's address is locked, even with a forged entry in front...
    forged = sign_in.post(client, PASSWORD, REMOTE_ADDR=PROXY,
                          HTTP_X_FORWARDED_FOR="192.0.2.1, 198.51.100.66")  # fmt: skip
    assert forged.status_code == 429
    # ...and another client behind the same proxy signs in.
    other = sign_in.post(client, PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert other.status_code == 302
    assert signed_in(client)
