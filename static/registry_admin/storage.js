// Storage page: the top repositories (unique vs shared bytes) and usage over time. Data comes
// from the json_script tag "storage-chart-data"; the table below the charts has the numbers.
// The shared setup (theme colours, redraws) is in charts.js.
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

  var tooltip = {
    callbacks: {
      label: function (item) {
        return item.dataset.label + ": " + humanBytes(item.raw) + " (" +
          item.raw.toLocaleString() + " bytes)";
      },
    },
  };

  window.OysterCharts.whenReady(function (colors) {
    var source = document.getElementById("storage-chart-data");
    if (!source) return;
    var data = JSON.parse(source.textContent);
    var top = document.getElementById("storage-top-chart");
    var history = document.getElementById("storage-history-chart");
    if (top) {
      window.OysterCharts.draw(
        top,
        "bar",
        data.top.labels,
        [
          ["Unique", data.top.unique, colors.first],
          ["Shared", data.top.shared, colors.second],
        ],
        { indexAxis: "y", scales: { x: bytesAxis(true), y: { stacked: true } }, plugins: { tooltip: tooltip } }
      );
    }
    if (history) {
      var labels = data.history.labels.map(function (iso) {
        return new Date(iso).toLocaleString();
      });
      window.OysterCharts.draw(
        history,
        "line",
        labels,
        [
          ["Stored", data.history.total, colors.first],
          ["Reclaimable", data.history.reclaimable, colors.danger],
        ],
        { scales: { y: bytesAxis(false) }, plugins: { tooltip: tooltip } }
      );
    }
  });
})();
