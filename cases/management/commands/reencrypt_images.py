"""Re-encrypt every stored image (and thumbnail, preview) under the newest key of IMAGE_ENCRYPTION_KEYS.

Key rotation: put the new key first in IMAGE_ENCRYPTION_KEYS (old ones after it), restart, run this command;
when it reports that no file is left under an old key, remove that key from the setting. Files are replaced
one by one, atomically, under the same storage key; uploads meanwhile are written with the new key already.
"""

from collections import Counter

from django.core.management.base import BaseCommand, CommandError

from cases import storage


class Command(BaseCommand):
    help = "Re-encrypt stored images under the newest IMAGE_ENCRYPTION_KEYS key so older keys can be retired."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Only count the files under older keys.")

    def handle(self, **options):
        newest = storage.encryption_keys()[0].key_id
        keys = storage.stored_keys()
        by_key: Counter[str] = Counter()
        failures: list[str] = []
        rewritten = 0
        for storage_key in keys:
            try:
                key_id = storage.key_id_of(storage_key)
                by_key[key_id.hex()] += 1
                if key_id != newest and not options["dry_run"]:
                    rewritten += storage.reencrypt(storage_key)
            except (storage.StoredImageError, OSError) as exc:
                failures.append(f"{storage_key}: {exc}")
        current = by_key.pop(newest.hex(), 0)
        if options["dry_run"]:
            older = sum(by_key.values())
            per_key = ", ".join(f"key id {key}: {count}" for key, count in sorted(by_key.items())) or "none"
            self.stdout.write(f"{older} file(s) to re-encrypt ({per_key}); {current} already under the newest key")
        else:
            self.stdout.write(f"{rewritten} file(s) re-encrypted; {current} already under the newest key")
            if not failures:
                self.stdout.write(
                    f"Every stored file is under key id {newest.hex()}; older keys can be removed from "
                    "IMAGE_ENCRYPTION_KEYS."
                )
        if failures:
            listed = "\n".join(failures[:50]) + ("\n…" if len(failures) > 50 else "")
            raise CommandError(f"{len(failures)} file(s) could not be re-encrypted:\n{listed}")
