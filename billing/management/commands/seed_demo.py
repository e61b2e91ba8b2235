"""Load the demo data once: partners, classes, customers with portal logins, an admin.

Running it again changes nothing (every row is looked up by a natural key first).
"""

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from billing.models import Customer, CustomerClass, Partner, PortalUser

DEMO_ADMIN = ("admin", "admin")
DEMO_CUSTOMERS = [
    # login, name, partner, class, balance model, currency
    ("alice", "Alice Telecom Ltd", "Northwind Mobile", "Retail", "prepaid", "USD"),
    ("bob", "Bob's Bakery", "Northwind Mobile", "Retail", "prepaid", "USD"),
    ("charlie", "Charlie Logistics GmbH", "Eurolink ISP", "Business", "postpaid", "EUR"),
    ("dana", "Dana API Studio", "Eurolink ISP", "Business", "prepaid", "EUR"),
]


class Command(BaseCommand):
    help = "Load demo data (idempotent): partners, customer classes, customers, logins."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
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
                },
            )
            created += was_created
            if not users.objects.filter(username=login).exists():
                user = users.objects.create_user(login, f"{login}@example.com", login)
                PortalUser.objects.create(user=user, customer=customer)
        self.stdout.write(f"demo data ready ({created} customers created)")
