// Dashboard: pushes and pulls per day. Data comes from the json_script tag "audit-activity-data";
// the shared setup (theme colours, redraws) is in charts.js.
(function () {
  "use strict";
  window.OysterCharts.whenReady(function (colors) {
    var canvas = document.getElementById("audit-activity-chart");
    var source = document.getElementById("audit-activity-data");
    if (!canvas || !source) return;
    var data = JSON.parse(source.textContent);
    window.OysterCharts.draw(
      canvas,
      "bar",
      data.labels,
      [
        ["Pushes", data.pushes, colors.first],
        ["Pulls", data.pulls, colors.second],
      ],
      { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }
    );
  });
})();
