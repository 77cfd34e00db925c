// Storage page: the top repositories (unique vs shared bytes) and usage over time. Data comes
// from the json_script tag "storage-chart-data"; the table below the charts has the numbers.
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

  function drawTop(canvas, top) {
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: top.labels,
        datasets: [
          { label: "Unique", data: top.unique, backgroundColor: "#1565c0" },
          { label: "Shared", data: top.shared, backgroundColor: "#90caf9" },
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
    var labels = history.labels.map(function (iso) {
      return new Date(iso).toLocaleString();
    });
    new window.Chart(canvas, {
      type: "line",
      data: {
        labels: labels,
        datasets: [
          { label: "Stored", data: history.total, borderColor: "#1565c0", backgroundColor: "#1565c0" },
          { label: "Reclaimable", data: history.reclaimable, borderColor: "#c62828", backgroundColor: "#c62828" },
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
    var data = JSON.parse(source.textContent);
    var top = document.getElementById("storage-top-chart");
    var history = document.getElementById("storage-history-chart");
    if (top) drawTop(top, data.top);
    if (history) drawHistory(history, data.history);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
