// Progressive enhancement only: every page works without this script.
// - the command form shows only the arguments of the chosen command kind;
// - forms with data-confirm ask before posting (pausing a deployment).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const kind = document.getElementById("command-kind");
  if (kind) {
    const sync = () => {
      for (const field of document.querySelectorAll("[data-for-kind]")) {
        field.hidden = field.dataset.forKind !== kind.value;
      }
    };
    kind.addEventListener("change", sync);
    sync();
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
