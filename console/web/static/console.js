// envlet console: optional comfort only; every form works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Delete asks first.
  document.querySelectorAll("form.delete").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm("Delete? This cannot be undone.")) e.preventDefault();
    });
  });
  // The eye icon reveals in place (the agent audits it); a second press hides.
  document.querySelectorAll("form.reveal").forEach(function (f) {
    var shown = false;
    f.addEventListener("submit", function (e) {
      var target = document.getElementById(f.dataset.target);
      if (!target) return; // no place to show it: let the form load the page
      e.preventDefault();
      var label = f.querySelector("button span");
      var isInput = target.tagName === "INPUT";
      var row = target.closest("tr");
      if (shown) {
        if (isInput) {
          target.value = "";
          // Hidden again: an empty field keeps the stored value.
          var h = document.createElement("input");
          h.type = "hidden"; h.name = "hidden"; h.value = "1"; h.setAttribute("form", target.getAttribute("form"));
          target.parentNode.appendChild(h);
        } else { target.textContent = "••••••••"; }
        if (target.tagName === "PRE" && row) row.hidden = true;
        shown = false;
        if (label) label.textContent = label.dataset.was;
        return;
      }
      fetch(f.action, { method: "POST", body: new FormData(f), credentials: "same-origin",
                        headers: { "X-Console-Reveal": "value" } })
        .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
        .then(function (r) {
          if (!r.ok) { window.alert(r.text); return; }
          if (isInput) {
            target.value = r.text;
            // The value is in the field now: saving writes what it shows.
            document.querySelectorAll('input[form="' + target.getAttribute("form") + '"][name=hidden]').forEach(function (h) { h.remove(); });
          } else {
            target.textContent = r.text;
          }
          if (target.tagName === "PRE" && row) row.hidden = false;
          shown = true;
          if (label) { label.dataset.was = label.textContent; label.textContent = "Hide"; }
        });
    });
  });
});
