"""Django's `flush` (empty every table), able to pass the append-only DELETE triggers on SQLite.

Flushing wipes the whole database, not one record; PostgreSQL does it with TRUNCATE, which the row triggers
do not see, and SQLite with DELETE, which they do. Tests flush between transactional tests.
"""

from django.core.management.commands.flush import Command as FlushCommand

from audit.db_guards import guards_bypassed


class Command(FlushCommand):
    def handle(self, **options):
        with guards_bypassed():
            return super().handle(**options)
