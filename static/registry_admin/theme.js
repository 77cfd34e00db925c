// Light and dark themes. Loaded blocking in <head> (a static file, so the Content-Security-Policy
// needs no inline script) to set data-theme before the first paint: no flash of the wrong theme.
// "auto" (no data-theme attribute) lets Pico follow the system setting; the switch in the header
// cycles auto -> light -> dark and remembers the choice in localStorage.
(function () {
  "use strict";
  var KEY = "oyster-theme";
  var CHOICES = ["auto", "light", "dark"];
  var root = document.documentElement;
  var listeners = [];
  var media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  function stored() {
    try {
      var value = window.localStorage.getItem(KEY);
      return CHOICES.indexOf(value) >= 0 ? value : "auto";
    } catch (e) {
      return "auto"; // storage disabled: follow the system
    }
  }

  function effective(choice) {
    if (choice !== "auto") return choice;
    return media && media.matches ? "dark" : "light";
  }

  function apply(choice) {
    if (choice === "auto") {
      root.removeAttribute("data-theme");
    } else {
      root.setAttribute("data-theme", choice);
    }
    root.setAttribute("data-theme-choice", choice);
    root.setAttribute("data-theme-effective", effective(choice));
  }

  function notify() {
    listeners.forEach(function (fn) {
      fn(effective(current));
    });
  }

  function cssVar(name) {
    return getComputedStyle(root).getPropertyValue(name).trim();
  }

  function label(button, choice) {
    var text = { auto: "Theme: auto", light: "Theme: light", dark: "Theme: dark" }[choice];
    button.textContent = text;
    button.setAttribute("title", "Switch the colour theme (auto follows the system setting)");
  }

  var current = stored();
  apply(current);

  window.OysterTheme = {
    // Charts draw with these, and redraw when the theme changes.
    colors: function () {
      return {
        text: cssVar("--pico-color"),
        muted: cssVar("--pico-muted-color"),
        grid: cssVar("--pico-muted-border-color"),
        first: cssVar("--oy-chart-1"),
        second: cssVar("--oy-chart-2"),
        danger: cssVar("--oy-chart-danger"),
      };
    },
    onChange: function (fn) {
      listeners.push(fn);
    },
  };

  if (media && media.addEventListener) {
    media.addEventListener("change", function () {
      apply(current);
      notify();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.hidden = false;
    label(button, current);
    button.addEventListener("click", function () {
      var next = CHOICES[(CHOICES.indexOf(current) + 1) % CHOICES.length];
      try {
        window.localStorage.setItem(KEY, next);
      } catch (e) {
        // storage disabled: the choice holds for this page only
      }
      current = next;
      apply(next);
      label(button, next);
      notify();
    });
  });
})();
