// Draws the supervisor dashboard's charts from the JSON the page embeds (no network requests).
(function () {
  "use strict";
  const source = document.getElementById("dashboard-data");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  const data = JSON.parse(source.textContent);
  // Django's JavaScript catalogue (base.html) translates; without it the English stays.
  const gettext = window.gettext || ((text) => text);
  // Numbers as the page's language writes them ("0,953" in Spanish).
  const threeDecimals = (value) =>
    value.toLocaleString(document.documentElement.lang || undefined, { minimumFractionDigits: 3, maximumFractionDigits: 3 });
  const seriesNames = { precision: gettext("Precision"), recall: gettext("Recall"), f1: "F1" };
  const palette = ["#0d6efd", "#dc3545", "#198754", "#fd7e14", "#6f42c1", "#20c997", "#d63384", "#6c757d", "#0dcaf0", "#ffc107"];
  const colour = (index) => palette[index % palette.length];

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (canvas) {
      config.options = Object.assign({ responsive: true, animation: false }, config.options || {});
      new Chart(canvas, config);
      canvas.dataset.rendered = "true";
    }
  }

  draw("chart-per-class", {
    type: "bar",
    data: {
      labels: data.perClass.labels,
      datasets: ["precision", "recall", "f1"].map((name, index) => ({
        label: seriesNames[name],
        data: data.perClass[name],
        backgroundColor: colour(index),
      })),
    },
    options: { scales: { y: { min: 0, max: 1 } } },
  });

  draw("chart-roc", {
    type: "scatter",
    data: {
      datasets: data.roc
        .map((curve, index) => ({
          label: `${curve.label} (AUC ${threeDecimals(curve.auc)})`,
          data: curve.fpr.map((x, point) => ({ x: x, y: curve.tpr[point] })),
          showLine: true,
          pointRadius: 0,
          borderColor: colour(index),
          backgroundColor: colour(index),
        }))
        .concat([{
          label: gettext("chance"),
          data: [{ x: 0, y: 0 }, { x: 1, y: 1 }],
          showLine: true,
          pointRadius: 0,
          borderDash: [4, 4],
          borderColor: "#adb5bd",
        }]),
    },
    options: {
      scales: {
        x: { min: 0, max: 1, title: { display: true, text: gettext("False positive rate") } },
        y: { min: 0, max: 1, title: { display: true, text: gettext("True positive rate") } },
      },
    },
  });

  draw("chart-cells-per-day", {
    type: "bar",
    data: {
      labels: data.cellsPerDay.labels,
      datasets: [{ label: gettext("Cells classified"), data: data.cellsPerDay.counts, backgroundColor: colour(0) }],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
  });

  draw("chart-flagged", {
    type: "bar",
    data: {
      labels: data.flaggedOutcomes.labels,
      datasets: [{ label: gettext("Flagged cells"), data: data.flaggedOutcomes.counts, backgroundColor: "#ffc107" }],
    },
    options: { indexAxis: "y", scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  });
})();
