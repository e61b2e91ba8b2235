"""An unexpected error in a page never sends a traceback to the client, even with
DEBUG on (as under `make run`); the traceback goes to the log."""

import logging

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret internals: /etc/app/settings.py line 42")


urlpatterns = [path("boom/", boom), path("", include("config.urls"))]

pytestmark = pytest.mark.urls("tests.config.test_plain_errors")


@pytest.mark.django_db
def test_an_unexpected_error_in_a_page_is_the_plain_500_page_even_with_debug(settings, caplog):
    settings.DEBUG = True
    with caplog.at_level(logging.ERROR, logger="config.middleware"):
        response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong" in body
    assert "Traceback" not in body and "secret internals" not in body and "settings" not in body
    assert "secret internals" in caplog.text  # logged for staff


@pytest.mark.django_db
def test_show_tracebacks_brings_the_technical_page_back(settings):
    settings.DEBUG = True
    settings.SHOW_TRACEBACKS = True
    response = Client(raise_request_exception=False).get("/boom/")
    assert response.status_code == 500
    assert "secret internals" in response.content.decode()


@pytest.mark.django_db
def test_a_missing_page_is_still_django_s_404(settings):
    response = Client(raise_request_exception=False).get("/no-such-page/")
    assert response.status_code == 404
