from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.utils.translation import gettext_lazy as _


class Laboratory(models.Model):
    """A laboratory and its imaging set-up (microscope or analyser, camera). Its scale, when known, is how
    cells of its cases are cropped at the model's physical scale; without it the scale is estimated."""

    name = models.CharField(max_length=120, unique=True)
    instrument = models.CharField(
        max_length=200, blank=True, help_text=_("Microscope or analyser and camera, e.g. 'CellaVision DM96'.")
    )
    um_per_pixel = models.FloatField(
        _("µm per pixel"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01), MaxValueValidator(10.0)],
        help_text=_("Micrometres per image pixel, when the laboratory knows it (calibration slide)."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("laboratory")
        verbose_name_plural = _("laboratories")

    def __str__(self) -> str:
        return f"{self.name} ({self.instrument})" if self.instrument else self.name


class Case(models.Model):
    """One blood smear / sample."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        CLASSIFYING = "classifying", _("Classifying")
        AWAITING_REVIEW = "awaiting_review", _("Awaiting review")
        SIGNED = "signed", _("Signed")

    accession_id = models.CharField(max_length=64, unique=True)
    # Identifies the patient in the lab's own system: stored, never listed or exported.
    patient_reference = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cases_created")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="cases_signed"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    # Where the smear was imaged: the scale its cells are cropped at, and whose adapted model may serve it.
    laboratory = models.ForeignKey(Laboratory, null=True, blank=True, on_delete=models.PROTECT, related_name="cases")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.accession_id


class CellImageQuerySet(models.QuerySet):
    def cells(self):
        """Cells only: what galleries, reviews, differentials and reports list and count (never a field, nor an
        upload in which no cell was found). An upload not yet analysed counts as a cell until it is."""
        return self.filter(kind=CellImage.Kind.CELL)


class CellImage(models.Model):
    """An uploaded image or a cell found in one.

    An upload is first a cell (kind "cell"). Analysis decides: a crop stays one cell (with its box); a whole
    microscope field becomes kind "field" and gets one child cell (`parent`) per cell found, each with its box
    in the field and its own stored crop; an upload in which no cell is found becomes kind "no_cell" with
    status "no_cell", a final state that is neither a failure nor a prediction.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        CLASSIFYING = "classifying", _("Classifying")
        CLASSIFIED = "classified", _("Classified")
        FAILED = "failed", _("Failed")
        NO_CELL = "no_cell", _("No cell found")

    class Kind(models.TextChoices):
        CELL = "cell", _("Cell")
        FIELD = "field", _("Microscope field")
        NO_CELL = "no_cell", _("Image without a cell")

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="images")
    # Path inside the private, encrypted image store; never a URL.
    storage_key = models.CharField(max_length=255, unique=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    content_type = models.CharField(max_length=40)
    original_name = models.CharField(max_length=255, blank=True, help_text="Metadata only; never used as a path.")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    status_message = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    status_changed_at = models.DateTimeField(auto_now=True)
    # The cell's final label: its latest review's label, "" while nobody has reviewed it. Written only by
    # cases.final_labels.keep_final_label, in the transaction that adds the Review; reports and every page read it.
    final_label = models.CharField(max_length=60, blank=True, default="", db_index=True)
    final_reviewed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    reclassified = models.BooleanField(default=False, help_text="A pathologist changed its label at least once.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CELL, db_index=True)
    # A cell found in a field: the field, and the cell's box in it (upright pixels, end-exclusive). A crop
    # upload has a box in itself and no parent.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="cells")
    box_x0 = models.PositiveIntegerField(null=True, blank=True)
    box_y0 = models.PositiveIntegerField(null=True, blank=True)
    box_x1 = models.PositiveIntegerField(null=True, blank=True)
    box_y1 = models.PositiveIntegerField(null=True, blank=True)
    located_as = models.CharField(
        max_length=30, blank=True, help_text="What the cell finder took it for: leukocyte, platelet, nucleated red cell"
    )
    # Encrypted renditions in the image store: a small JPEG for galleries (every image), and for fields a
    # larger JPEG the case page draws the boxes on. Stored once, so no page decodes the full image again.
    thumbnail_key = models.CharField(max_length=255, blank=True)
    preview_key = models.CharField(max_length=255, blank=True)
    # The scale the upload was analysed at, and where it came from ("laboratory", "red_cells", "default").
    um_per_pixel = models.FloatField(null=True, blank=True)
    scale_source = models.CharField(max_length=20, blank=True)

    objects = CellImageQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind.replace('_', ' ')} {self.pk} of {self.case_id}"

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        if self.box_x0 is None:
            return None
        return (self.box_x0, self.box_y0, self.box_x1, self.box_y1)

    @property
    def box_width(self) -> int | None:
        return None if self.box_x0 is None else self.box_x1 - self.box_x0

    @property
    def box_height(self) -> int | None:
        return None if self.box_y0 is None else self.box_y1 - self.box_y0


class Prediction(models.Model):
    image = models.ForeignKey(CellImage, on_delete=models.PROTECT, related_name="predictions")
    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=60)
    confidence = models.FloatField()
    probabilities = models.JSONField(help_text="Every class's probability, by class name.")
    flagged = models.BooleanField(default=False, help_text="Shown as 'unidentified — needs review'.")
    ood_score = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField()
    # Stable codes of why it is flagged: "low_confidence", "out_of_distribution", "not_a_cell",
    # "unfamiliar_imaging", and "unvalidated_case" (its case as a whole is imaged unlike the training data:
    # inference.case_review).
    flag_reasons = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model_version", "created_at"], name="prediction_version_time")]
        constraints = [
            # A redelivered task must not store the same prediction twice.
            models.UniqueConstraint(fields=["image", "model_version"], name="one_prediction_per_model")
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.confidence:.2f})"

    @property
    def flag_reason_names(self) -> list[str]:
        """The flag's reasons in words, for the pages (the codes stay in `flag_reasons`)."""
        return [str(FLAG_REASON_NAMES.get(code, code.replace("_", " "))) for code in self.flag_reasons or ()]


FLAG_REASON_NAMES = {
    "low_confidence": _("low confidence"),
    "out_of_distribution": _("unlike the images the model was trained on"),
    "not_a_cell": _("may not be a blood cell"),
    "unfamiliar_imaging": _("imaged unlike the training laboratories"),
    "unvalidated_case": _("in a case imaged unlike the training laboratories"),
}


class ShadowPrediction(models.Model):
    """What the version in shadow mode said about a cell, beside the prediction that was shown.

    A table of its own (not a flag on Prediction), so that no page, API endpoint, export or differential,
    all of which read `Prediction`, can show it by mistake: only the supervisors' dashboard reads it.
    """

    image = models.ForeignKey(CellImage, on_delete=models.PROTECT, related_name="shadow_predictions")
    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.PROTECT, related_name="+")
    # The active version whose Prediction of the same cell was shown: the dashboard compares the two.
    served_version = models.ForeignKey("inference.ModelVersion", on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=60)
    confidence = models.FloatField()
    probabilities = models.JSONField()
    flagged = models.BooleanField(default=False)
    flag_reasons = models.JSONField(default=list, blank=True)
    ood_score = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["model_version", "created_at"], name="shadow_version_time")]
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="one_shadow_per_model")]

    def __str__(self) -> str:
        return f"shadow {self.label} ({self.confidence:.2f})"


class Review(models.Model):
    """A pathologist's decision on one cell. Append-only; the final label is the latest review."""

    class Kind(models.TextChoices):
        CONFIRM = "confirm", _("Confirmed")
        OVERRIDE = "override", _("Reclassified")
        AMENDMENT = "amendment", _("Amendment after sign-off")

    image = models.ForeignKey(CellImage, on_delete=models.PROTECT, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    from_label = models.CharField(max_length=60, blank=True)
    to_label = models.CharField(max_length=60)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of cell {self.image_id}: {self.to_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Reviews are append-only.")
        from .final_labels import keep_final_label

        with transaction.atomic():
            super().save(*args, **kwargs)
            keep_final_label(self)

    def delete(self, *args, **kwargs):
        raise PermissionError("Reviews are append-only.")


class CaseComment(models.Model):
    """A pathologist's comment on a case, printed in its report. Append-only: a correction is a new comment."""

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    text = models.TextField()
    # Written after the case was signed: an addendum to the signed report.
    after_signing = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"comment {self.pk} on {self.case_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Comments are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Comments are append-only.")
