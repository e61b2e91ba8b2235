"""django-celery-beat's DatabaseScheduler, made safe to start twice.

Two beat processes with the plain DatabaseScheduler each send every periodic task,
so each job would run twice per interval. This scheduler sends only while it holds
a PostgreSQL advisory lock ("celery-beat") on a connection of its own; a second
beat stands by, checking every few seconds, and takes over when the first one's
session ends (process killed, host lost). So "exactly one beat" holds even when
a deploy or an operator starts two, and a standby beat is a cheap failover.

The runner's per-job lock still protects against overlap (a slow run and the next
tick); this one keeps the tick itself single.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, connections
from django_celery_beat.schedulers import DatabaseScheduler

from jobs.runner import lock_key

logger = logging.getLogger(__name__)

BEAT_LOCK = "celery-beat"


class LeaderDatabaseScheduler(DatabaseScheduler):
    #: how often a standby beat tries to become the active one (seconds)
    standby_interval = 5.0
    #: how often the active beat checks that its lock session is still alive
    alive_check_interval = 1.0
    #: write last_run_at to the database often, so a takeover knows what ran
    sync_every = 10

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock_connection: Any = None
        self._leader = False
        self._last_alive_check = 0.0
        self._announced_standby = False
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._is_leader():
            return min(self.standby_interval, self.max_interval)
        return super().tick(*args, **kwargs)

    def _is_leader(self) -> bool:
        if self._leader and time.monotonic() - self._last_alive_check < self.alive_check_interval:
            return True
        try:
            if self._lock_connection is None:
                # Not Django's shared connection: close_old_connections() must never
                # end the session that holds the lock.
                self._lock_connection = connections.create_connection(DEFAULT_DB_ALIAS)
            with self._lock_connection.cursor() as cursor:
                if self._leader:
                    cursor.execute("SELECT 1")  # the session lives, so the lock is ours
                    self._last_alive_check = time.monotonic()
                    return True
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_key(BEAT_LOCK)])
                row = cursor.fetchone()
        except (DatabaseError, InterfaceError):
            logger.warning("beat: lost the database session holding the beat lock", exc_info=True)
            self._drop_lock_connection()
            return False
        if row and row[0]:
            logger.info("beat: this process is now the active scheduler")
            self._leader = True
            self._last_alive_check = time.monotonic()
            self._announced_standby = False
            # Start from the database's view (last_run_at written by the previous
            # active beat), not from what this process read when it started.
            self._initial_read = True
            self._heap = None
            self.old_schedulers = None
            return True
        if not self._announced_standby:
            logger.info("beat: another beat is active; standing by")
            self._announced_standby = True
        return False

    def _drop_lock_connection(self) -> None:
        self._leader = False
        if self._lock_connection is not None:
            try:
                self._lock_connection.close()
            except (DatabaseError, InterfaceError):
                pass
            self._lock_connection = None

    def reserve(self, entry: Any) -> Any:
        """Also keep the advanced entry in the schedule, as Celery's own Scheduler does.

        django-celery-beat's `reserve` leaves the entry that was just sent in
        `_schedule`, with its old `last_run_at`. When a schedule change lands while
        the heap is being rebuilt (two reloads in one tick: e.g. another beat
        starting and writing its default entries), the next tick rebuilds the heap
        from `_schedule` and sends those entries a second time, milliseconds apart.
        Seen in tests/jobs/test_beat.py; pinned by test_beat_unit.py."""
        new_entry = super().reserve(entry)
        if self._schedule is not None and entry.name in self._schedule:
            self._schedule[entry.name] = new_entry
        return new_entry

    def close(self) -> None:
        super().close()
        self._drop_lock_connection()
