"""The case report as a PDF (fpdf2, pure Python): A4, the laboratory's header, the same content as the page.

Text is set in DejaVu Sans where the system has it (any language); otherwise in the PDF core font Helvetica,
with characters outside Latin-1 replaced. Cell images come decrypted from the private store and exist only
inside the PDF.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext, ngettext
from fpdf import FPDF
from PIL import Image

from inference.preprocessing import to_rgb

from . import selectors
from .models import CellImage
from .report import CaseReport
from .storage import StoredImageError

logger = logging.getLogger(__name__)

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
THUMB_MM = 22
REPLACEMENTS = {"—": "-", "–": "-", "→": "->", "↑": "^", "↓": "v", "“": '"', "”": '"', "’": "'", "…": "..."}


class ReportPDF(FPDF):
    def __init__(self, report: CaseReport):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report = report
        self.unicode = self._add_unicode_font()
        self.set_auto_page_break(auto=True, margin=18)
        self.set_title(f"Report {report.case.accession_id}")
        self.set_author(report.header.name)
        self.set_creator("HematoVision")

    def _add_unicode_font(self) -> bool:
        for folder in FONT_DIRS:
            regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
            if regular.is_file() and bold.is_file():
                self.add_font("DejaVu", "", str(regular))
                self.add_font("DejaVu", "B", str(bold))
                return True
        return False

    def text_of(self, value) -> str:
        text = str(value)
        if self.unicode:
            return text
        for old, new in REPLACEMENTS.items():
            text = text.replace(old, new)
        return text.encode("latin-1", "replace").decode("latin-1")

    def font(self, size: float, bold: bool = False) -> None:
        self.set_font("DejaVu" if self.unicode else "Helvetica", "B" if bold else "", size)

    def header(self) -> None:
        header = self.report.header
        self.font(13, bold=True)
        self.cell(0, 6, self.text_of(header.name), new_x="LMARGIN", new_y="NEXT")
        self.font(8)
        for line in [*header.address_lines, header.contact, header.accreditation]:
            if line:
                self.cell(0, 4, self.text_of(line), new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(120, 120, 120)
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.ln(3)

    def footer(self) -> None:
        self.set_y(-13)
        self.font(7)
        case = self.report.case
        self.cell(
            0,
            5,
            self.text_of(
                gettext(
                    "Case %(accession)s · %(status)s · HematoVision decision support, not a diagnostic device · "
                    "page %(page)s/%(pages)s"
                )
                % {
                    "accession": case.accession_id,
                    "status": self.report.status_text,
                    "page": self.page_no(),
                    "pages": "{nb}",
                }
            ),
            align="C",
        )

    def heading(self, text: str) -> None:
        self.ln(2)
        self.font(11, bold=True)
        self.cell(0, 6, self.text_of(text), new_x="LMARGIN", new_y="NEXT")
        self.font(9)

    def line_text(self, text: str, size: float = 9, bold: bool = False) -> None:
        self.font(size, bold=bold)
        self.multi_cell(0, 4.5, self.text_of(text), new_x="LMARGIN", new_y="NEXT")


def _thumbnail(image_id: int) -> Image.Image | None:
    try:
        image = CellImage.objects.get(pk=image_id)
        data, _ = selectors.image_rendition(image=image, variant="thumb")
        with Image.open(io.BytesIO(data)) as opened:
            return to_rgb(opened).copy()
    except (CellImage.DoesNotExist, StoredImageError, OSError) as exc:
        logger.warning("cell %s left out of the PDF gallery: %s", image_id, exc)
        return None


def _when(value) -> str:
    """In the reader's date format and the laboratory's time zone, named: "05/03/2026 14:30 CET"."""
    if not value:
        return "—"
    local = timezone.localtime(value)
    return f"{date_format(local, 'SHORT_DATETIME_FORMAT')} {local.strftime('%Z')}".strip()


def render_pdf(report: CaseReport) -> bytes:
    case = report.case
    pdf = ReportPDF(report)
    pdf.alias_nb_pages()
    pdf.add_page()
    pdf.line_text(gettext("Leukocyte differential — digital morphology"), size=14, bold=True)
    rows = [
        (gettext("Accession"), case.accession_id),
        (gettext("Patient reference"), case.patient_reference or "—"),
        (gettext("Received"), _when(case.created_at)),
        (gettext("Status"), report.status_text),
        (
            gettext("Signed"),
            gettext("%(when)s by %(email)s")
            % {"when": _when(case.signed_at), "email": case.signed_by.get_full_name() or case.signed_by.email},
        )
        if case.signed_by_id
        else (gettext("Signed"), gettext("not yet")),
        (gettext("Model version"), ", ".join(report.model_versions) or "—"),
        (gettext("Report printed"), _when(report.generated_at)),
    ]
    for label, value in rows:
        pdf.font(9, bold=True)
        pdf.cell(38, 5, pdf.text_of(label))
        pdf.font(9)
        pdf.cell(0, 5, pdf.text_of(value), new_x="LMARGIN", new_y="NEXT")
    if report.critical:
        pdf.ln(2)
        pdf.set_text_color(160, 0, 0)
        pdf.line_text(
            gettext("CRITICAL FINDING: a reviewer marked at least one cell other / abnormal."), size=10, bold=True
        )
        pdf.set_text_color(0, 0, 0)

    differential = report.differential
    pdf.heading(gettext("Differential"))
    counted = ngettext("%(count)d leukocyte counted;", "%(count)d leukocytes counted;", differential.leukocytes) % {
        "count": differential.leukocytes
    }
    reviewed = ngettext(
        "%(reviewed)d of %(count)d cell with a pathologist's final label",
        "%(reviewed)d of %(count)d cells with a pathologist's final label",
        differential.total_cells,
    ) % {"reviewed": differential.reviewed_cells, "count": differential.total_cells}
    not_reviewed = gettext("(* = the model's label, not yet reviewed).")
    pdf.line_text(f"{counted} {reviewed} {not_reviewed}")
    widths = (62, 18, 28, 42, 30)
    pdf.font(9, bold=True)
    titles = (gettext("Cell type"), gettext("Count"), gettext("Value"), gettext("Adult reference"), gettext("Flag"))
    for width, title in zip(widths, titles, strict=True):
        pdf.cell(width, 6, pdf.text_of(title), border="B")
    pdf.ln()
    pdf.font(9)
    for row in differential.rows:
        value = f"{row.value:.1f} {row.unit}" if row.value is not None else "—"
        reference = f"{row.low:g}–{row.high:g} {row.unit}" if row.low is not None else "—"
        flag = {"high": "↑ " + gettext("above range"), "low": "↓ " + gettext("below range")}.get(row.flag, "")
        cells = (row.name, f"{row.count}{'*' if row.unreviewed else ''}", value, reference, flag)
        for width, text in zip(widths, cells, strict=True):
            pdf.font(9, bold=bool(row.flag) and text == flag)
            pdf.cell(width, 5, pdf.text_of(text))
        pdf.ln()
    pdf.ln(1)
    pdf.line_text(
        gettext("Reported apart (not in the percentages)")
        + ": "
        + ", ".join(f"{row.name} {row.count}" for row in differential.reviewer_rows)
        + "."
    )
    pdf.line_text(
        gettext(
            "Percentages are of leukocytes; NRBC per 100 leukocytes; platelets counted only. Reference intervals are "
            "common adult values; interpret with the laboratory's own intervals."
        ),
        size=7,
    )

    if report.comments:
        pdf.heading(gettext("Comments"))
        for comment in report.comments:
            who = comment.author.get_full_name() or comment.author.email
            addendum = " (" + gettext("addendum after signing") + ")" if comment.after_signing else ""
            pdf.line_text(f"{_when(comment.created_at)} {who}{addendum}: {comment.text}")
    if report.amendments:
        pdf.heading(gettext("Amendments after signing"))
        for amendment in report.amendments:
            pdf.line_text(
                gettext("%(when)s %(by)s: cell %(cell)s %(from)s → %(to)s — %(reason)s")
                % {
                    "when": _when(amendment.at),
                    "by": amendment.by,
                    "cell": amendment.cell_id,
                    "from": amendment.from_name,
                    "to": amendment.to_name,
                    "reason": amendment.reason,
                }
            )

    pdf.heading(gettext("Cells by class"))
    for group in report.gallery:
        shown = len(group.cells)
        first_shown = gettext("first %(shown)s shown") % {"shown": shown}
        more = f" ({first_shown})" if group.count > shown else ""
        pdf.line_text(f"{group.name}: {group.count}{more}", bold=True)
        x = pdf.l_margin
        if pdf.get_y() + THUMB_MM > pdf.h - 20:
            pdf.add_page()
        y = pdf.get_y()
        for cell in group.cells:
            thumbnail = _thumbnail(cell.image_id)
            if thumbnail is None:
                continue
            if x + THUMB_MM > pdf.w - pdf.r_margin:
                x = pdf.l_margin
                y += THUMB_MM + 2
                if y + THUMB_MM > pdf.h - 20:
                    pdf.add_page()
                    y = pdf.get_y()
            pdf.image(thumbnail, x=x, y=y, w=THUMB_MM, h=THUMB_MM)
            x += THUMB_MM + 2
        pdf.set_y(y + THUMB_MM + 2)
    signer = case.signed_by
    pdf.ln(2)
    pdf.line_text(
        gettext("Signed electronically by %(signer)s on %(when)s.")
        % {"signer": signer.get_full_name() or signer.email, "when": _when(case.signed_at)}
        if signer
        else gettext("Not signed: preliminary report."),
        bold=True,
    )
    return bytes(pdf.output())
