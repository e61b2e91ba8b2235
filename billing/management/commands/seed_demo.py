"""Load the demo data once: partners, classes, customers with portal logins, an admin.

Running it again changes nothing (every row is looked up by a natural key first).
"""

from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from billing.models import (
    ApiKey,
    Customer,
    CustomerClass,
    Partner,
    PortalUser,
    Price,
    ProductItem,
    hash_api_secret,
)
from wallets import services
from wallets.actors import Actor
from wallets.models import LedgerTransaction

DEMO_ADMIN = ("admin", "admin")
# A fixed API key, so that `make run` can print it (like the demo logins): local demos only.
DEMO_API_TOKEN = "ppk_demo-local-only-not-for-production"  # noqa: S105 (demo data, like admin/admin)
DEMO_PRODUCTS: list[tuple[str, str, str, list[tuple[str, str, dict[str, str]]]]] = [
    # code, name, unit, prices: (currency, unit price, dimensions)
    ("api-calls", "API calls", "call",
     [("USD", "0.002", {}), ("EUR", "0.0018", {}), ("USD", "0.0015", {"region": "eu"}),
      ("EUR", "0.0014", {"region": "eu"})]),
    ("voice-minutes", "Voice minutes", "minute", [("USD", "0.05", {}), ("EUR", "0.045", {})]),
    ("sms", "SMS", "message", [("USD", "0.04", {}), ("EUR", "0.035", {})]),
]  # fmt: skip
DEMO_CUSTOMERS = [
    # login, name, partner, class, balance model, currency
    ("alice", "Alice Telecom Ltd", "Northwind Mobile", "Retail", "prepaid", "USD"),
    ("bob", "Bob's Bakery", "Northwind Mobile", "Retail", "prepaid", "USD"),
    ("charlie", "Charlie Logistics GmbH", "Eurolink ISP", "Business", "postpaid", "EUR"),
    ("dana", "Dana API Studio", "Eurolink ISP", "Business", "prepaid", "EUR"),
]


# balance warnings (billing.thresholds); the history below crosses some of them
DEMO_WARNINGS = {
    "alice": {"low_funds_thresholds": "50, 20, 5"},
    "bob": {"low_funds_thresholds": "10, 5"},
    "charlie": {"credit_limit_warnings": "25%, 50%, 80%"},
}


class Command(BaseCommand):
    help = "Load demo data (idempotent): partners, customer classes, customers, logins."

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            created = self.reference_data_and_history()
        # subscriptions are registered through their service, which commits on its own
        self.subscriptions()
        self.stdout.write(f"demo data ready ({created} customers created)")

    def reference_data_and_history(self) -> int:
        users = get_user_model()
        admin_name, admin_password = DEMO_ADMIN
        if not users.objects.filter(username=admin_name).exists():
            users.objects.create_superuser(admin_name, "admin@example.com", admin_password)

        partners = {
            "Northwind Mobile": Partner.objects.get_or_create(
                name="Northwind Mobile", defaults={"support_email": "support@northwind.example"}
            )[0],
            "Eurolink ISP": Partner.objects.get_or_create(
                name="Eurolink ISP",
                defaults={"support_email": "help@eurolink.example", "top_up_in_portal": False},
            )[0],
        }
        classes = {
            "Retail": CustomerClass.objects.get_or_create(
                name="Retail",
                defaults={
                    "transfers_allowed": True,
                    "max_temporary_increase_amount": Decimal("50.00"),
                    "max_temporary_increase_days": 14,
                },
            )[0],
            "Business": CustomerClass.objects.get_or_create(
                name="Business",
                defaults={
                    "transfers_allowed": False,
                    "max_temporary_increase_amount": Decimal("1000.00"),
                    "max_temporary_increase_days": 30,
                },
            )[0],
        }
        created = 0
        for login, name, partner, klass, model, currency in DEMO_CUSTOMERS:
            customer, was_created = Customer.objects.get_or_create(
                name=name,
                defaults={
                    "email": f"{login}@example.com",
                    "partner": partners[partner],
                    "customer_class": classes[klass],
                    "balance_model": model,
                    "currency": currency,
                    **DEMO_WARNINGS.get(login, {}),
                },
            )
            created += was_created
            if not users.objects.filter(username=login).exists():
                user = users.objects.create_user(login, f"{login}@example.com", login)
                PortalUser.objects.create(user=user, customer=customer)
        self.catalogue()
        self.history()
        return created

    def catalogue(self) -> None:
        """Product items with prices in both demo currencies (one cheaper for
        region=eu), in force since 60 days ago, and the demo API key."""
        since = timezone.now() - timedelta(days=60)
        for code, name, unit, prices in DEMO_PRODUCTS:
            item, _ = ProductItem.objects.get_or_create(
                code=code, defaults={"name": name, "unit": unit}
            )
            for currency, unit_price, dimensions in prices:
                Price.objects.get_or_create(
                    product_item=item, currency=currency, dimensions=dimensions,
                    defaults={"unit_price": Decimal(unit_price), "effective_from": since},
                )  # fmt: skip
        if not ApiKey.objects.filter(secret_hash=hash_api_secret(DEMO_API_TOKEN)).exists():
            ApiKey.objects.create(
                name="Demo key (local only)",
                prefix=DEMO_API_TOKEN[: len("ppk_") + 8],
                secret_hash=hash_api_secret(DEMO_API_TOKEN),
                created_by="seed_demo",
            )

    def history(self) -> None:
        """Wallets with credit, usage and a pending grant, booked through the ledger
        services with fixed idempotency keys (so a second run books nothing)."""
        if LedgerTransaction.objects.filter(idempotency_key="demo:alice-1").exists():
            return  # dates below are relative to the first run; the history is there
        actor = Actor.system("seed_demo")
        calls = ProductItem.objects.get(code="api-calls")
        now = timezone.now()

        def grant(customer: Customer, key: str, amount: str, **kwargs) -> None:
            wallet = services.open_wallet(customer=customer)
            kwargs.setdefault("kind", "paid")
            services.grant_credit(wallet=wallet, amount=Decimal(amount), actor=actor,
                                  idempotency_key=f"demo:{key}", **kwargs)  # fmt: skip

        def use(customer: Customer, key: str, amount: str, days_ago: int, **kwargs) -> None:
            wallet = services.open_wallet(customer=customer)
            services.draw_down(wallet=wallet, amount=Decimal(amount), actor=actor, idempotency_key=f"demo:{key}",
                               at=now - timedelta(days=days_ago), item_id=calls.pk, **kwargs)  # fmt: skip

        alice = Customer.objects.get(name="Alice Telecom Ltd")
        grant(alice, "alice-1", "100.00", name="Starter bundle", effective_at=now - timedelta(days=40),
              expires_at=now + timedelta(days=325))  # fmt: skip
        grant(alice, "alice-2", "10.00", kind="free", name="Welcome credit", effective_at=now - timedelta(days=40),
              expires_at=now + timedelta(days=20))  # fmt: skip
        grant(alice, "alice-3", "25.00", name="EU API calls", condition_item=calls,
              condition_dimensions={"region": "eu"}, effective_at=now - timedelta(days=40))  # fmt: skip
        for day in range(30, 0, -3):
            use(
                alice,
                f"alice-use-{day}",
                "1.75",
                day,
                dimensions={"region": "eu" if day % 2 else "us"},
            )
        bob = Customer.objects.get(name="Bob's Bakery")
        grant(bob, "bob-1", "20.00", name="Top-up", effective_at=now - timedelta(days=10))
        for day in (9, 6, 2):
            use(bob, f"bob-use-{day}", "4.20", day)
        charlie = Customer.objects.get(name="Charlie Logistics GmbH")
        wallet = services.open_wallet(customer=charlie)
        if wallet.credit_limit == 0:
            services.change_permanent_limit(
                wallet=wallet, limit=Decimal("500"), actor=actor, reason="postpaid account"
            )
        for day in (20, 12, 5):
            use(charlie, f"charlie-use-{day}", "63.40", day)
        dana = Customer.objects.get(name="Dana API Studio")
        grant(dana, "dana-1", "50.00", name="Q4 bundle (bank transfer)", pending=True)

    def subscriptions(self) -> None:
        """Two services, Alice's TV subscription (paid) and Bob's line (his wallet cannot
        pay it: deactivated, on hold for funds), and Alice's automatic top-up."""
        from billing.models.subscriptions import (
            AutoTopUp,
            PrepaidSubscription,
            Service,
            ServiceRate,
        )
        from billing.subscriptions import services as subscription_services
        from billing.subscriptions import topup

        tv, _ = Service.objects.get_or_create(code="tv-basic", defaults={"name": "TV basic"})
        line, _ = Service.objects.get_or_create(code="phone-line", defaults={"name": "Phone line"})
        for service, currency, per_period, per_day in (
            (tv, "USD", "30.00", "0"), (tv, "EUR", "28.00", "0"),
            (line, "USD", "5.00", "0.50"), (line, "EUR", "5.00", "0.45"),
        ):  # fmt: skip
            ServiceRate.objects.get_or_create(
                service=service, currency=currency,
                defaults={"per_period": Decimal(per_period), "per_day": Decimal(per_day)},
            )  # fmt: skip
        actor = Actor.system("seed_demo")
        for name, title, chosen in (
            ("Alice Telecom Ltd", "Home TV", [tv]),
            ("Bob's Bakery", "Shop phone line", [line]),
        ):
            customer = Customer.objects.get(name=name)
            if not PrepaidSubscription.objects.filter(customer=customer, name=title).exists():
                subscription_services.register_subscription(
                    customer=customer, name=title, services=chosen, actor=actor
                )
        alice = Customer.objects.get(name="Alice Telecom Ltd")
        if not AutoTopUp.objects.filter(customer=alice).exists():
            topup.configure_auto_top_up(
                wallet=services.open_wallet(customer=alice), threshold=Decimal("20"),
                amount=Decimal("50"), daily_max_amount=Decimal("150"), actor=actor,
            )  # fmt: skip
