from django.db import models


class DailyMetrics(models.Model):
    """One model version's aggregates over the cells it classified on one local day (see
    reports.daily_metrics): what the dashboard adds up instead of reading every cell. Derived data, rebuilt
    whenever it is stale (a cell of that day reviewed since, a prediction added to it, another time zone)."""

    model_version = models.ForeignKey("inference.ModelVersion", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    time_zone = models.CharField(max_length=64)
    # The version's predictions that day when it was computed (cells or not): another count makes it stale.
    predictions = models.PositiveIntegerField()
    computed_at = models.DateTimeField()
    # groups: [final_label, label, flagged, reclassified, cells]; bins: {class: 100 counts of other final labels
    # then 100 of this class}; cases: case ids; latency: [latency rounded to 0.01 ms, cells]
    data = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model_version", "day"], name="one_daily_metrics_per_day")]

    def __str__(self) -> str:
        return f"{self.model_version_id} on {self.day}: {self.cells} cells"
