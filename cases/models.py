from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction


class Laboratory(models.Model):
    """A laboratory and its imaging set-up (microscope or analyser, camera). Its scale, when known, is how
    cells of its cases are cropped at the model's physical scale; without it the scale is estimated."""

    name = models.CharField(max_length=120, unique=True)
    instrument = models.CharField(
        max_length=200, blank=True, help_text="Microscope or analyser and camera, e.g. 'CellaVision DM96'."
    )
    um_per_pixel = models.FloatField(
        "µm per pixel",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01), MaxValueValidator(10.0)],
        help_text="Micrometres per image pixel, when the laboratory knows it (calibration slide).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "laboratories"

    def __str__(self) -> str:
        return f"{self.name} ({self.instrument})" if self.instrument else self.name


class Case(models.Model):
    """One blood smear / sample."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        CLASSIFYING = "classifying", "Classifying"
        AWAITING_REVIEW = "awaiting_review", "Awaiting review"
        SIGNED = "signed", "Signed"

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


class CellImage(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        CLASSIFYING = "classifying", "Classifying"
        CLASSIFIED = "classified", "Classified"
        FAILED = "failed", "Failed"

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
    final_reviewed_at = models.DateTimeField(null=True, blank=True)
    reclassified = models.BooleanField(default=False, help_text="A pathologist changed its label at least once.")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"cell {self.pk} of {self.case_id}"


class Prediction(models.Model):
    image = models.ForeignKey(CellImage, on_delete=models.PROTECT, related_name="predictions")
    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.PROTECT, related_name="+")
    label = models.CharField(max_length=60)
    confidence = models.FloatField()
    probabilities = models.JSONField(help_text="Every class's probability, by class name.")
    flagged = models.BooleanField(default=False, help_text="Shown as 'unidentified — needs review'.")
    ood_score = models.FloatField(null=True, blank=True)
    latency_ms = models.FloatField()
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


class Review(models.Model):
    """A pathologist's decision on one cell. Append-only; the final label is the latest review."""

    class Kind(models.TextChoices):
        CONFIRM = "confirm", "Confirmed"
        OVERRIDE = "override", "Reclassified"
        AMENDMENT = "amendment", "Amendment after sign-off"

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
