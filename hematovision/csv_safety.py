"""Every CSV the platform writes goes through here: a cell that a spreadsheet would read as a formula is
neutralised with a leading apostrophe (OWASP "CSV injection").

A text value starting with = + - @, a tab or a carriage return gets a leading `'`, so an email address such
as `=cmd|'/C calc'!A0@x.test` shows as text in Excel or LibreOffice instead of running. Numbers are left
alone (a negative number is a number, not a formula). This module imports nothing from the apps, so any of
them (reports, cases, inference commands) can use it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

FORMULA_STARTS = frozenset("=+-@\t\r")


def neutralise(value):
    """`value`, with a leading apostrophe if it is text a spreadsheet would take for a formula."""
    if isinstance(value, str) and value and value[0] in FORMULA_STARTS:
        return "'" + value
    return value


def safe_row(row: Iterable) -> list:
    # neutralise() inlined: this runs for every cell of every export.
    return ["'" + value if value.__class__ is str and value and value[0] in FORMULA_STARTS else value for value in row]


class SafeWriter:
    """csv.writer that neutralises every cell; use it wherever the platform writes a CSV."""

    def __init__(self, stream, **kwargs):
        self._writer = csv.writer(stream, **kwargs)

    def writerow(self, row: Iterable):
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable]) -> None:
        self._writer.writerows(safe_row(row) for row in rows)


def csv_text_chunks(rows: Iterable[Iterable], *, rows_per_chunk: int = 1000) -> Iterator[str]:
    """The rows as CSV text, a chunk of up to `rows_per_chunk` rows at a time (for a streaming response)."""
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    pending = 0
    for row in rows:
        writer.writerow(row)
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue()
