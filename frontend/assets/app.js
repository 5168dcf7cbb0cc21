// Progressive enhancement only: every page works without this file. It adds a "Copy"
// button next to each read-only field marked `.copy` (DNS records, shown-once passwords)
// and selects a field's text when it gets focus.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!navigator.clipboard) return;
  for (const field of document.querySelectorAll("input.copy, textarea.copy")) {
    field.addEventListener("focus", () => field.select());
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button button-quiet button-small copy-button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy " + (field.getAttribute("aria-label") || "this value"));
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch (_) {
        field.select();
        button.textContent = "Press Ctrl+C";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
    // Field and button side by side.
    const row = document.createElement("span");
    row.className = "copy-row";
    field.replaceWith(row);
    row.append(field, button);
  }
});
