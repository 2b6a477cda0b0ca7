from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class ModelVersion(models.Model):
    """A trained or imported classifier. Its metadata is the single source of truth for
    class names, input size and preprocessing, so serving can never drift from training."""

    class Source(models.TextChoices):
        BUNDLED = "bundled", _("Bundled with the platform")
        TRAINED = "trained", _("Trained here")
        IMPORTED = "imported", _("Imported file")
        ADAPTED = "adapted", _("Adapted to a laboratory")

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
    # Shadow mode: an inactive, evaluated version that also classifies every new cell; its predictions are
    # stored apart (cases.ShadowPrediction) and never shown to technicians. At most one at a time.
    is_shadow = models.BooleanField(default=False)
    shadow_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(null=True, blank=True)
    # The version this one replaced when it was last activated: what a rollback brings back.
    previous_version = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model"),
            models.UniqueConstraint(fields=["is_shadow"], condition=Q(is_shadow=True), name="one_shadow_model"),
            models.CheckConstraint(condition=~Q(is_active=True, is_shadow=True), name="shadow_is_not_active"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelImport(models.Model):
    """A model file waiting to be, being, or having been imported by a worker.

    Importing loads TensorFlow and exports the model (tens of seconds), so it runs in a Celery worker,
    never in a web request; this row is what the admin sees meanwhile.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Importing")
        DONE = "done", _("Imported")
        FAILED = "failed", _("Failed")

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


class ModelEvaluation(models.Model):
    """A recorded measurement of a version on labelled cells, beside the version that was active then.

    The activation gate: a version without one cannot be activated from the page or the API.
    """

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluations")
    data = models.CharField(max_length=300, help_text="What it was measured on (a lab's hold-out part, a folder).")
    metrics = models.JSONField(help_text="The keys of `evaluate --json`.")
    baseline = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    baseline_metrics = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.version} on {self.data}"


class AdaptationJob(models.Model):
    """Adapting the active model to a laboratory's reviewed cells, run by a `training` worker (or, in the
    embedded default, a background process); this row is what the page shows meanwhile."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    FINISHED = (Status.DONE, Status.FAILED, Status.CANCELLED)

    name = models.CharField(max_length=120, help_text="Name of the version it registers.")
    source_label = models.CharField(max_length=200, help_text="Whose cells: a laboratory, a folder.")
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    base_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    result = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who runs it ("host:pid") and when it last said so: a running job whose process is gone, or that has
    # not moved for ADAPTATION_STALE_SECONDS, ended with its worker (inference.adaptation.fail_dead_jobs).
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"adaptation {self.name} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED
