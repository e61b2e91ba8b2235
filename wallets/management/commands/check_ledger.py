from django.core.management.base import BaseCommand, CommandError

from wallets.ledger_check import find_problems, ledger_totals, wallets_over_limit


class Command(BaseCommand):
    help = "Recompute every cached balance from ledger entries and check every invariant."

    def handle(self, *args, **options) -> None:
        problems = find_problems()
        totals = ledger_totals()
        summary = ", ".join(f"{value} {name}" for name, value in totals.items())
        if problems:
            for line in problems:
                self.stderr.write(line)
            raise CommandError(f"ledger check FAILED: {len(problems)} problem(s) in {summary}")
        self.stdout.write(self.style.SUCCESS(f"ledger OK: {summary}"))
        for line in wallets_over_limit():
            self.stdout.write(
                self.style.WARNING(f"over the credit limit now (not a ledger error): {line}")
            )
