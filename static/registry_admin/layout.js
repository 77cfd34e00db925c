// Tables (in div.overflow-auto) and preformatted text scroll sideways inside their own box on
// narrow screens. A box that
// actually scrolls must be reachable by keyboard and named for screen readers (WCAG 2.1.1), so
// it becomes a focusable, labelled region only while its content is wider than the box.
(function () {
  "use strict";
  function label(box) {
    var section = box.closest("section, details, main");
    var heading = section && section.querySelector("h1, h2, h3, summary");
    var caption = box.querySelector("caption");
    var text = (caption || heading || { textContent: "Table" }).textContent.trim();
    return text + " (scrolls sideways)";
  }

  function update() {
    document.querySelectorAll(".overflow-auto, pre").forEach(function (box) {
      if (box.scrollWidth > box.clientWidth + 1) {
        box.setAttribute("tabindex", "0");
        box.setAttribute("role", "region");
        box.setAttribute("aria-label", label(box));
        box.classList.add("is-scrolling");
      } else if (box.classList.contains("is-scrolling")) {
        box.removeAttribute("tabindex");
        box.removeAttribute("role");
        box.removeAttribute("aria-label");
        box.classList.remove("is-scrolling");
      }
    });
  }

  var pending = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(update, 100);
  });
  document.addEventListener("toggle", update, true); // a <details> opened
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", update);
  } else {
    update();
  }
})();
