// Dashboard: pushes and pulls per day. Data comes from the json_script tag "audit-activity-data".
// Colours come from the theme (static/registry_admin/theme.js); the chart redraws when it changes.
(function () {
  "use strict";
  function draw() {
    var canvas = document.getElementById("audit-activity-chart");
    var source = document.getElementById("audit-activity-data");
    if (!canvas || !source || typeof window.Chart === "undefined") {
      return;
    }
    var colors = window.OysterTheme.colors();
    var old = window.Chart.getChart(canvas);
    if (old) old.destroy();
    window.Chart.defaults.color = colors.text;
    window.Chart.defaults.borderColor = colors.grid;
    var data = JSON.parse(source.textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Pushes", data: data.pushes, backgroundColor: colors.first },
          { label: "Pulls", data: data.pulls, backgroundColor: colors.second },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    canvas.dataset.rendered = "true";
    canvas.dataset.theme = document.documentElement.getAttribute("data-theme-effective");
  }
  window.OysterTheme.onChange(draw);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
