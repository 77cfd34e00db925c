// Polls the latest run of each progress widget while it is active and reloads the page once it
// finishes, so the figures it produced are shown.
(function () {
  "use strict";
  document.querySelectorAll("[data-run-status-url]").forEach(function (box) {
    var text = box.querySelector(".run-text");
    var wasActive = /Requested|Running/.test(text.textContent);
    if (!wasActive) return;
    var timer = setInterval(function () {
      fetch(box.dataset.runStatusUrl, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data || !data.run) return;
          var run = data.run;
          if (run.state === "running" || run.state === "requested") {
            text.textContent = (run.state === "running" ? "Running" : "Requested") +
              (run.total ? ": " + run.done + " / " + run.total : "") +
              (run.message ? " — " + run.message : "");
            var bar = box.querySelector("progress");
            if (!bar && run.total) {
              // A stage with a known total began after the page loaded.
              bar = document.createElement("progress");
              bar.setAttribute("aria-label", box.dataset.runLabel + ": progress");
              text.after(bar);
            }
            if (bar && run.total) { bar.max = run.total; bar.value = run.done; }
            var eta = box.querySelector(".run-eta");
            if (eta) eta.textContent = run.eta || "";
          } else {
            clearInterval(timer);
            window.location.reload();
          }
        })
        .catch(function () {});
    }, 1500);
  });
})();
