"""The servers the suite runs on are the real ones the product needs."""

import pytest
from django.core.cache import cache
from django.db import connection


@pytest.mark.django_db
def test_database_is_postgresql():
    assert connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version_num")
        assert int(cursor.fetchone()[0]) >= 140000


def test_cache_is_shared_redis_with_atomic_increment():
    cache.set("infra-probe", 1, 30)
    assert cache.incr("infra-probe") == 2
    cache.delete("infra-probe")


def test_health_endpoint(client, db):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_celery_is_configured_for_crash_safety(settings):
    from config.celery import app

    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.broker_transport_options["visibility_timeout"] >= 3600
    assert app.conf.broker_url.startswith(("redis", "rediss"))
