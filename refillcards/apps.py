from django.apps import AppConfig


class RefillcardsConfig(AppConfig):
    name = "refillcards"
    verbose_name = "Refill cards"
