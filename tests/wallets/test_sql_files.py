"""The SQL that the database runs is the SQL in `wallets/sql/`.

Migrations carry frozen copies (history must replay); these files are the one
readable home of each function and trigger. A test database is built by the
migrations, so if a migration and its file disagree, the function or trigger in
the database differs from the file and a test here fails: we run the file's
CREATE OR REPLACE in the test's transaction (rolled back afterwards) and compare
PostgreSQL's own definition before and after, whitespace-normalised.
"""

import re
from pathlib import Path

import pytest
from django.db import connection

import wallets

pytestmark = pytest.mark.django_db

SQL_DIR = Path(wallets.__file__).resolve().parent / "sql"
FUNCTION_FILES = sorted(SQL_DIR.glob("*.sql"))
TRIGGER_FILES = sorted((SQL_DIR / "triggers").glob("*.sql"))


def _normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _our_functions() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT p.proname, p.oid FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = current_schema() AND p.proname LIKE 'wallets\\_%'
            """
        )
        rows = cursor.fetchall()
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), f"overloaded functions: {sorted(names)}"
    return dict(rows)


def _our_triggers() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.tgname, t.oid FROM pg_trigger t
            JOIN pg_class c ON c.oid = t.tgrelid
            WHERE NOT t.tgisinternal AND c.relname LIKE 'wallets\\_%'
            """
        )
        return dict(cursor.fetchall())


def _definition(sql: str, oid: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql, [oid])
        return _normalised(cursor.fetchone()[0])


def test_every_function_in_the_database_has_a_file_and_every_file_a_function():
    assert sorted(_our_functions()) == [path.stem for path in FUNCTION_FILES]


def test_every_trigger_on_a_ledger_table_has_a_file_and_every_file_a_trigger():
    assert sorted(_our_triggers()) == [path.stem for path in TRIGGER_FILES]


@pytest.mark.parametrize("path", FUNCTION_FILES, ids=lambda path: path.stem)
def test_the_function_in_the_database_is_the_one_in_its_file(path):
    oid = _our_functions()[path.stem]
    running = _definition("SELECT pg_get_functiondef(%s)", oid)
    with connection.cursor() as cursor:
        cursor.execute(path.read_text())
    assert _definition("SELECT pg_get_functiondef(%s)", oid) == running, (
        f"{path.name} differs from the function the migrations built: "
        "add a migration with a frozen copy of the file, or fix the file"
    )


@pytest.mark.parametrize("path", TRIGGER_FILES, ids=lambda path: path.stem)
def test_the_trigger_in_the_database_is_the_one_in_its_file(path):
    oid = _our_triggers()[path.stem]
    running = _definition("SELECT pg_get_triggerdef(%s)", oid)
    with connection.cursor() as cursor:
        cursor.execute(path.read_text())
    assert _definition("SELECT pg_get_triggerdef(%s)", oid) == running, (
        f"{path.name} differs from the trigger the migrations built"
    )


def test_a_changed_file_would_be_noticed():
    """The comparison is not blind: the same function with one change differs."""
    path = SQL_DIR / "wallets_effective_credit_limit.sql"
    oid = _our_functions()[path.stem]
    running = _definition("SELECT pg_get_functiondef(%s)", oid)
    with connection.cursor() as cursor:
        cursor.execute(path.read_text().replace("p_at < p_valid_until", "p_at <= p_valid_until"))
    assert _definition("SELECT pg_get_functiondef(%s)", oid) != running
