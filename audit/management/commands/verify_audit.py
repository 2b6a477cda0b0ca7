"""Verify the audit trail's hash chain: exit status 1 and where it breaks, else 0 and the chain's head."""

from django.core.management.base import BaseCommand, CommandError

from audit.chain import seal, verify
from audit.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain (exit status 1 if it is broken, naming the first broken link)."

    def add_arguments(self, parser):
        parser.add_argument("--seal", action="store_true", help="Seal pending events first.")
        parser.add_argument(
            "--expect-head",
            metavar="SEQ:HASH",
            help="A head printed by an earlier run (kept outside the database): the chain must still contain it, "
            "which catches the removal of the newest events.",
        )

    def handle(self, **options):
        if options["seal"]:
            self.stdout.write(f"sealed {seal()} event(s)")
        report = verify()
        if not report.ok:
            raise CommandError(
                f"audit chain breaks at seq {report.broken_at} (event {report.event_id}): {report.reason}. "
                f"Events up to seq {report.head_seq} verify."
            )
        if options["expect_head"]:
            self._check_head(options["expect_head"])
        self.stdout.write(f"chain intact: {report.sealed} event(s), head seq {report.head_seq} hash {report.head_hash}")
        if report.unsealed:
            self.stdout.write(f"{report.unsealed} event(s) not sealed yet (sealed every minute, or: seal_audit)")

    def _check_head(self, expected: str) -> None:
        seq_text, _, hash_text = expected.partition(":")
        if not seq_text.isdigit() or len(hash_text) != 64:
            raise CommandError("--expect-head takes SEQ:HASH as printed by verify_audit (e.g. 1234:9f86d0…).")
        seq = int(seq_text)
        if seq == 0:
            return
        stored = AuditEvent.objects.filter(chain_seq=seq).values_list("chain_hash", flat=True).first()
        if stored is None:
            raise CommandError(
                f"audit chain: the recorded head seq {seq} ({hash_text[:12]}…) is missing: events were removed"
            )
        if stored != hash_text:
            raise CommandError(f"audit chain: seq {seq} has hash {stored[:12]}…, not the recorded {hash_text[:12]}…")
