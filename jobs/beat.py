"""django-celery-beat's DatabaseScheduler, made safe to start twice.

Two beat processes with the plain DatabaseScheduler each send every periodic task,
so each job would run twice per interval. This scheduler sends only while it holds
a PostgreSQL advisory lock ("celery-beat") on a connection of its own; a second
beat stands by, checking every few seconds, and takes over when the first one's
session ends (process killed, host lost). So "exactly one beat" holds even when
a deploy or an operator starts two, and a standby beat is a cheap failover.

The runner's per-job lock still protects against overlap (a slow run and the next
tick); this one keeps the tick itself single.

Outages. The beat outlives PostgreSQL and Redis going away and coming back:
- a database error anywhere in a tick (the lock session, the schedule reads, a
  stale connection after a restart) drops every connection and the leadership,
  logs one line, and the beat tries again every `database_retry_interval`; it
  takes the lock anew (another beat may have it by then) and reloads the schedule
  from the database, so "exactly one beat" holds across the outage;
- a task the broker refused stays due: its `last_run_at` is put back, so the
  schedule sends it as soon as the broker answers again (one send per job, not
  one per missed tick), and the beat does not advance past it. While the broker
  is down the beat tries one send every `broker_retry_interval`. The same holds
  across a takeover: the database keeps the last run that was really sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, connections
from django_celery_beat.schedulers import DatabaseScheduler
from kombu.exceptions import OperationalError as BrokerUnavailable

from jobs.runner import lock_key

logger = logging.getLogger(__name__)

BEAT_LOCK = "celery-beat"


def _broker_unavailable(exc: BaseException | None) -> bool:
    """Did the send fail because the broker did not answer (as opposed to a task
    that cannot be sent at all, which would fail the same way forever)?"""
    while exc is not None:
        if isinstance(exc, BrokerUnavailable | OSError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(exc: BaseException) -> str:
    """One line: the error's class and its first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class LeaderDatabaseScheduler(DatabaseScheduler):
    #: how often a standby beat tries to become the active one (seconds)
    standby_interval = 5.0
    #: how often the active beat checks that its lock session is still alive
    alive_check_interval = 1.0
    #: write last_run_at to the database often, so a takeover knows what ran
    sync_every = 10
    #: while PostgreSQL does not answer: how often to try again (seconds)
    database_retry_interval = 2.0
    #: while the broker refuses tasks: how often to try one send again (seconds)
    broker_retry_interval = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock_connection: Any = None
        self._leader = False
        self._last_alive_check = 0.0
        self._announced_standby = False
        self._database_down_since: float | None = None
        self._broker_down_since: float | None = None
        self._broker_retry_at = 0.0
        self._sending = False
        self._setup_pending = False
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        """Install the default entries, or, while the database is down at start,
        do it once it answers (instead of exiting)."""
        try:
            super().setup_schedule()
        except (DatabaseError, InterfaceError) as exc:
            self._setup_pending = True
            self._database_failed(exc)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if not self._is_leader():
                if self._database_down_since is not None:
                    return min(self.database_retry_interval, self.max_interval)
                return min(self.standby_interval, self.max_interval)
            if self._setup_pending:
                super().setup_schedule()
                self._setup_pending = False
            if self._broker_down_since is not None:
                wait = self._broker_retry_at - time.monotonic()
                if wait > 0:
                    return min(wait, self.max_interval)
            interval = super().tick(*args, **kwargs)
        except (DatabaseError, InterfaceError) as exc:
            self._database_failed(exc)
            return min(self.database_retry_interval, self.max_interval)
        self._database_answered()
        return interval

    # --- leadership --------------------------------------------------------------------

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
        except (DatabaseError, InterfaceError) as exc:
            self._database_failed(exc)
            return False
        self._database_answered()
        if row and row[0]:
            logger.info("beat: this process is now the active scheduler")
            self._leader = True
            self._last_alive_check = time.monotonic()
            self._announced_standby = False
            # Django's own connection may still point at a server that went away
            # while this process stood by (or lost the lock): reconnect before the
            # schedule is read.
            self._close_django_connection()
            # Start from the database's view (last_run_at written by the previous
            # active beat, or by this one before an outage), not from what this
            # process read when it started.
            self._initial_read = True
            self._heap = None
            self.old_schedulers = None
            return True
        if not self._announced_standby:
            logger.info("beat: another beat is active; standing by")
            self._announced_standby = True
        return False

    def _database_failed(self, exc: BaseException) -> None:
        """Drop every connection and the leadership: the lock's session is gone or
        cannot be trusted, and another beat may take over meanwhile."""
        was_leader = self._leader
        self._drop_lock_connection()
        self._close_django_connection()
        if self._database_down_since is None:
            self._database_down_since = time.monotonic()
            logger.error(
                "beat: the database is unavailable (%s); %s, retrying every %.0f s",
                _reason(exc),
                "stopped scheduling" if was_leader else "standing by",
                self.database_retry_interval,
            )

    def _database_answered(self) -> None:
        if self._database_down_since is not None:
            logger.warning(
                "beat: the database answers again after %.1f s",
                time.monotonic() - self._database_down_since,
            )
            self._database_down_since = None

    def _close_django_connection(self) -> None:
        try:
            connections[DEFAULT_DB_ALIAS].close()
        except (DatabaseError, InterfaceError):
            pass  # already broken: closing it is all we wanted

    def _drop_lock_connection(self) -> None:
        self._leader = False
        if self._lock_connection is not None:
            try:
                self._lock_connection.close()
            except (DatabaseError, InterfaceError):
                pass
            self._lock_connection = None

    # --- sending -----------------------------------------------------------------------

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        """Send one due task. When the broker does not take it, the entry is put back
        as it was (its last run not advanced, in memory and in the database), so it
        stays due and goes out as soon as the broker answers again."""
        logger.info("Scheduler: Sending due task %s (%s)", entry.name, entry.task)
        self._sending = True
        try:
            self.apply_async(entry, producer=producer, advance=False)
        except Exception as exc:  # the broker's errors come wrapped in SchedulingError
            if _broker_unavailable(exc):
                self._send_failed(entry, exc)
            else:  # as Celery does: log it, and the entry waits for its next run
                logger.exception("beat: could not send %r", entry.name)
        else:
            if self._broker_down_since is not None:
                logger.warning(
                    "beat: the broker takes tasks again after %.1f s; sending what was due",
                    time.monotonic() - self._broker_down_since,
                )
                self._broker_down_since = None
        finally:
            self._sending = False

    def _send_failed(self, entry: Any, exc: BaseException) -> None:
        # `reserve` advanced the shared model (last_run_at, total_run_count) and put
        # the next entry in the schedule; undo both, so the old entry is due again.
        entry.model.last_run_at = entry.last_run_at
        entry.model.total_run_count = max(0, entry.model.total_run_count - 1)
        if self._schedule is not None:
            self._schedule[entry.name] = entry
        self._dirty.add(entry.name)
        self._heap = None  # rebuilt from the schedule at the next try: the entry is due
        now = time.monotonic()
        self._broker_retry_at = now + self.broker_retry_interval
        if self._broker_down_since is None:
            self._broker_down_since = now
            logger.error(
                "beat: the broker refused %r (%s); it and every job due meanwhile "
                "will be sent once the broker answers, trying every %.0f s",
                entry.name,
                _reason(exc.__cause__ or exc.__context__ or exc),
                self.broker_retry_interval,
            )

    def should_sync(self) -> bool:
        # Not in the middle of a send: a failed send puts last_run_at back first.
        return not self._sending and super().should_sync()

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
        try:
            super().close()
        except (DatabaseError, InterfaceError):
            pass  # the last sync is lost; the next beat re-sends at most once per job
        self._drop_lock_connection()
