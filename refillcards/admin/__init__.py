"""Refill cards in the admin (Splynx: Finance → Refill cards): Generate, the series
list (view, edit, export, delete or disable), each series' cards table (redeem for a
customer, edit, delete), the redemption attempts log and the export log; one module
per concept (series.py with the settings, cards.py, logs.py; common.py the status
badges, the form page and the full-codes permission).

Every change goes through refillcards.services; every dangerous step has its own
page that asks first, checks a permission, logs a LogEntry and says what happened.
Codes are masked unless the staff member has `refillcards.view_full_codes`."""

from refillcards.admin import cards, logs, series

__all__ = ["cards", "logs", "series"]
