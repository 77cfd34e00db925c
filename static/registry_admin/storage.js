// Storage page: the top repositories (unique vs shared bytes) and usage over time. Data comes
// from the json_script tag "storage-chart-data"; the table below the charts has the numbers.
// Colours come from the theme (static/registry_admin/theme.js); the charts redraw when it changes.
(function () {
  "use strict";
  var UNITS = ["bytes", "KB", "MB", "GB", "TB", "PB"];

  function humanBytes(value) {
    var unit = 0;
    while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return (unit === 0 ? value : value.toFixed(1)) + " " + UNITS[unit];
  }

  function bytesAxis(stacked) {
    return { stacked: stacked, beginAtZero: true, ticks: { callback: humanBytes } };
  }

  function tooltip() {
    return {
      callbacks: {
        label: function (item) {
          return item.dataset.label + ": " + humanBytes(item.raw) + " (" +
            item.raw.toLocaleString() + " bytes)";
        },
      },
    };
  }

  function fresh(canvas) {
    var old = window.Chart.getChart(canvas);
    if (old) old.destroy();
    canvas.dataset.theme = document.documentElement.getAttribute("data-theme-effective");
    return window.OysterTheme.colors();
  }

  function drawTop(canvas, top) {
    var colors = fresh(canvas);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: top.labels,
        datasets: [
          { label: "Unique", data: top.unique, backgroundColor: colors.first },
          { label: "Shared", data: top.shared, backgroundColor: colors.second },
        ],
      },
      options: {
        animation: false,
        indexAxis: "y",
        responsive: true,
        scales: { x: bytesAxis(true), y: { stacked: true } },
        plugins: { tooltip: tooltip() },
      },
    });
    canvas.dataset.rendered = "true";
  }

  function drawHistory(canvas, history) {
    var colors = fresh(canvas);
    var labels = history.labels.map(function (iso) {
      return new Date(iso).toLocaleString();
    });
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          { label: "Stored", data: history.total, borderColor: colors.first, backgroundColor: colors.first },
          { label: "Reclaimable", data: history.reclaimable, borderColor: colors.danger, backgroundColor: colors.danger },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        scales: { y: bytesAxis(false) },
        plugins: { tooltip: tooltip() },
      },
    });
    canvas.dataset.rendered = "true";
  }

  function draw() {
    var source = document.getElementById("storage-chart-data");
    if (!source || typeof window.Chart === "undefined") {
      return;
    }
    var colors = window.OysterTheme.colors();
    window.Chart.defaults.color = colors.text;
    window.Chart.defaults.borderColor = colors.grid;
    var data = JSON.parse(source.textContent);
    var top = document.getElementById("storage-top-chart");
    var history = document.getElementById("storage-history-chart");
    if (top) drawTop(top, data.top);
    if (history) drawHistory(history, data.history);
  }

  window.OysterTheme.onChange(draw);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
