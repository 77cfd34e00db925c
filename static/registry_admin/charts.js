// The Chart.js setup every chart of the portal shares (the dashboard's and the storage page's):
// colours from the theme (static/registry_admin/theme.js), a redraw when the theme changes, no
// animation. Loaded after Chart.js and before the page's own script, all three deferred.
(function () {
  "use strict";

  window.OysterCharts = {
    // Calls draw(colors) once the page is parsed and again whenever the theme changes, with
    // Chart.js's default text and grid colours set for the theme. Without Chart.js (the vendored
    // file failed to load), draws nothing: the table beside each chart has the numbers.
    whenReady: function (draw) {
      function run() {
        if (typeof window.Chart === "undefined") return;
        var colors = window.OysterTheme.colors();
        window.Chart.defaults.color = colors.text;
        window.Chart.defaults.borderColor = colors.grid;
        draw(colors);
      }
      window.OysterTheme.onChange(run);
      if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", run);
      } else {
        run();
      }
    },

    // Draws a chart of `type` on canvas, replacing the one already there: one dataset for each
    // [label, data, colour] of `series`, over `labels`; `options` add to the shared ones. Marks
    // the canvas data-rendered and data-theme (the browser tests wait for these).
    draw: function (canvas, type, labels, series, options) {
      var old = window.Chart.getChart(canvas);
      if (old) old.destroy();
      new window.Chart(canvas, {
        type: type,
        data: {
          labels: labels,
          datasets: series.map(function (s) {
            return { label: s[0], data: s[1], borderColor: s[2], backgroundColor: s[2] };
          }),
        },
        options: Object.assign({ animation: false, responsive: true }, options),
      });
      canvas.dataset.rendered = "true";
      canvas.dataset.theme = document.documentElement.getAttribute("data-theme-effective");
    },
  };
})();
