from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    """A trained or imported classifier. Its metadata is the single source of truth for
    class names, input size and preprocessing, so serving can never drift from training."""

    class Source(models.TextChoices):
        BUNDLED = "bundled", "Bundled with the platform"
        TRAINED = "trained", "Trained here"
        IMPORTED = "imported", "Imported file"

    name = models.CharField(max_length=120, unique=True)
    source = models.CharField(max_length=20, choices=Source.choices)
    backbone = models.CharField(max_length=60)
    classes = models.JSONField(help_text="Class names in output order.")
    input_size = models.PositiveIntegerField()
    preprocessing = models.JSONField(default=dict, help_text="Parameters of inference.preprocessing.")
    # Thresholds below/above which a prediction is shown as "unidentified — needs review".
    confidence_threshold = models.FloatField(default=0.0)
    ood_threshold = models.FloatField(null=True, blank=True)
    temperature = models.FloatField(default=1.0)
    metrics = models.JSONField(default=dict, blank=True)
    training = models.JSONField(default=dict, blank=True, help_text="Data fingerprint, parameters, timings.")
    # Paths are relative to MODEL_STORE_DIR, or to BUNDLED_MODEL_DIR for the bundled model.
    artifact_dir = models.CharField(max_length=500)
    serving_artifact = models.CharField(max_length=200, help_text="File the predictor loads (e.g. model.tflite).")
    keras_artifact = models.CharField(max_length=200, blank=True)
    checksums = models.JSONField(default=dict, blank=True, help_text="sha256 of each artifact file.")
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model")
        ]

    def __str__(self) -> str:
        return self.name


class ModelImport(models.Model):
    """A model file waiting to be, being, or having been imported by a worker.

    Importing loads TensorFlow and exports the model (tens of seconds), so it runs in a Celery worker,
    never in a web request; this row is what the admin sees meanwhile.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Importing"
        DONE = "done", "Imported"
        FAILED = "failed", "Failed"

    original_name = models.CharField(max_length=255, help_text="Metadata only; never used as a path.")
    stored_file = models.CharField(max_length=255, help_text="Path of the upload, relative to MODEL_STORE_DIR.")
    options = models.JSONField(default=dict, help_text="name, classes, input_size, scale, activate")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    message = models.TextField(blank=True)
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"import of {self.original_name} ({self.status})"
