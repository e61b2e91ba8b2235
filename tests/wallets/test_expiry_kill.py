"""The kill test: a real Celery worker sweeping 20,000 due grants is SIGKILLed mid-run;
the task comes back (acks_late, visibility timeout) to a new worker, which finishes
the sweep. The sweep runs on two connections at once (two wallet partitions), so the
kill lands in the middle of both. The ledger then proves itself, every grant expired exactly once, and the
breakage is exactly what was left on the grants."""

import pytest

from jobs.models import JobRun
from jobs.runner import lock_is_held
from tests.celery_processes import Processes, wait_for, wait_for_log
from tests.wallets.expiry_checks import assert_each_grant_expired_exactly_once
from tests.wallets.expiry_seed import seed_due_grants
from wallets import tasks
from wallets.ledger_check import find_problems
from wallets.models import CreditGrant, Wallet

GRANTS = 20_000
BATCH = 100  # 200 batches: a run long enough to kill in the middle
CONNECTIONS = 2  # two wallet partitions swept at once, each on its own connection


def expired_count() -> int:
    return CreditGrant.objects.filter(status="expired").count()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_sweep_killed_mid_run_and_rerun_expires_every_grant_exactly_once(tmp_path):
    seeded = seed_due_grants(count=GRANTS, label="kill")
    left_on_grants = dict(CreditGrant.objects.values_list("pk", "remaining"))
    balance_before = dict(Wallet.objects.values_list("pk", "credit_balance"))
    assert find_problems() == []

    processes = Processes(tmp_path)
    try:
        first, first_log = processes.worker("first")
        wait_for_log(first_log, "ready.", timeout=30)
        tasks.expire_grants.apply_async(
            kwargs={"batch_size": BATCH, "connections": CONNECTIONS}, queue=processes.queue
        )

        # Let some batches commit, then pull the plug on the whole worker.
        at_kill = wait_for(
            lambda: (n := expired_count()) >= 10 * BATCH and n,
            timeout=30, message="the worker expired no grants", every=0.01,
        )  # fmt: skip
        processes.kill(first)
        after_kill = expired_count()
        assert at_kill <= after_kill < GRANTS, "the sweep finished before the kill"
        # whole batches only: each is one transaction (each partition's 10,000 grants
        # make 100 full batches)
        assert after_kill % BATCH == 0
        # both partitions were being swept when the worker died
        partitions = CreditGrant.objects.filter(status="expired").values_list(
            "wallet_id", flat=True
        )
        assert {wallet_id % CONNECTIONS for wallet_id in partitions} == {0, 1}
        assert find_problems() == []  # the half-done sweep is a consistent ledger
        killed = JobRun.objects.get(job_name="expire_grants")
        assert killed.status == "running"  # nobody was left to say otherwise

        # PostgreSQL ends the dead worker's session and with it the job lock.
        wait_for(lambda: not lock_is_held("job:expire_grants"), timeout=15, message="lock kept")

        # A new worker; the unacknowledged task comes back after the visibility timeout.
        # (So short that a slow rerun may itself be delivered again: that run finds
        # nothing left to do, which is the point of idempotent jobs.)
        _, second_log = processes.worker(
            "second", visibility_timeout=5, unacked_restore_interval=1, unacked_restore_throttle=1
        )
        wait_for(
            lambda: JobRun.objects.filter(job_name="expire_grants", status="succeeded").exists(),
            timeout=60,
            message=f"the redelivered sweep never finished:\n{second_log.read_text()[-3000:]}",
            every=0.2,
        )
    finally:
        processes.stop_all()

    killed.refresh_from_db()
    rerun, *redelivered = JobRun.objects.filter(
        job_name="expire_grants", status="succeeded"
    ).order_by("started_at")
    assert killed.status == "interrupted"
    assert rerun.items_processed == GRANTS - after_kill and rerun.items_failed == 0
    assert all(run.items_processed == 0 for run in redelivered)

    assert seeded.grants == GRANTS
    assert_each_grant_expired_exactly_once(seeded, left_on_grants, balance_before)
