"""Chain the audit events not sealed yet (the periodic task does the same every minute under Celery beat)."""

from django.core.management.base import BaseCommand

from audit.chain import seal


class Command(BaseCommand):
    help = "Seal pending audit events into the hash chain."

    def handle(self, **options):
        self.stdout.write(f"sealed {seal()} event(s)")
