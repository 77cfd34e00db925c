// Dashboard: pushes and pulls per day. Data comes from the json_script tag "audit-activity-data".
(function () {
  "use strict";
  function draw() {
    var canvas = document.getElementById("audit-activity-chart");
    var source = document.getElementById("audit-activity-data");
    if (!canvas || !source || typeof window.Chart === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Pushes", data: data.pushes, backgroundColor: "#1565c0" },
          { label: "Pulls", data: data.pulls, backgroundColor: "#90caf9" },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    canvas.dataset.rendered = "true";
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
