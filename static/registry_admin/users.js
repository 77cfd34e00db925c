// Registry users pages: copy a generated password, hide the typed-password fields when a
// password is generated. The pages work without it.
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-HTTP pages have no clipboard API: select the text and use the older command.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = document.execCommand("copy");
    document.body.removeChild(area);
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy-target"));
      var status = button.parentElement.querySelector("[data-copy-status]");
      copyText(source.textContent).then(
        function () { if (status) status.textContent = "Copied."; },
        function () { if (status) status.textContent = "Select the password and copy it by hand."; }
      );
    });
  });

  var typed = document.querySelector("[data-password-mode='typed']");
  var radios = document.querySelectorAll("input[name='mode']");
  function sync() {
    var checked = document.querySelector("input[name='mode']:checked");
    if (typed) typed.hidden = !!checked && checked.value === "generated";
  }
  radios.forEach(function (radio) { radio.addEventListener("change", sync); });
  sync();
})();
