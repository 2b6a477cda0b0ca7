"""Verify the audit trail's hash chain: exit status 1 and where it breaks, else 0 and the chain's head."""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import seal, verify


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain (exit status 1 if it is broken, naming the first broken link)."

    def add_arguments(self, parser):
        parser.add_argument("--seal", action="store_true", help="Seal pending events first.")

    def handle(self, **options):
        if options["seal"]:
            self.stdout.write(f"sealed {seal()} event(s)")
        report = verify()
        if not report.ok:
            raise CommandError(
                f"audit chain breaks at seq {report.broken_at} (event {report.event_id}): {report.reason}. "
                f"Events up to seq {report.head_seq} verify."
            )
        self.stdout.write(f"chain intact: {report.sealed} event(s), head seq {report.head_seq} hash {report.head_hash}")
        if report.unsealed:
            self.stdout.write(f"{report.unsealed} event(s) not sealed yet (sealed every minute, or: seal_audit)")
