// maskloop web UI: self-refreshing panels and upload niceties. No dependencies.
"use strict";

(function () {
  const REFRESH_MS = 1500;

  // An element with data-refresh-url and data-active="1" is re-fetched and replaced until the
  // server renders it with data-active="0" (every job in it has finished).
  function keepFresh(element) {
    if (element.dataset.active !== "1") return;
    window.setTimeout(async function () {
      try {
        const response = await fetch(element.dataset.refreshUrl, {
          credentials: "same-origin",
          headers: { "X-Requested-With": "fetch" },
        });
        if (response.ok) {
          const holder = document.createElement("template");
          holder.innerHTML = (await response.text()).trim();
          const fresh = holder.content.firstElementChild;
          if (fresh) {
            element.replaceWith(fresh);
            keepFresh(fresh);
            return;
          }
        }
      } catch (error) {
        // Network hiccup: try again at the next tick.
      }
      keepFresh(element);
    }, REFRESH_MS);
  }

  function describeFiles(input, label) {
    const count = input.files ? input.files.length : 0;
    if (count === 0) label.textContent = "Choose files…";
    else if (count === 1) label.textContent = input.files[0].name;
    else label.textContent = count + " files selected";
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh-url]").forEach(keepFresh);

    document.querySelectorAll(".file-drop").forEach(function (drop) {
      const input = drop.querySelector("input[type=file]");
      const label = drop.querySelector("[data-file-label]");
      if (input && label) input.addEventListener("change", function () { describeFiles(input, label); });
    });

    // The image grid's selection form (reopen, remove): "select all on this page" and the count of ticked tiles.
    document.querySelectorAll("[data-select-all]").forEach(function (all) {
      const form = all.form;
      if (!form) return;
      const boxes = document.querySelectorAll('input[name="image_ids"][form="' + form.id + '"]');
      const counter = form.querySelector("[data-selected-count]");
      function count() {
        const ticked = Array.prototype.filter.call(boxes, function (box) { return box.checked; }).length;
        if (counter) counter.textContent = ticked + " selected";
        all.checked = ticked > 0 && ticked === boxes.length;
      }
      all.addEventListener("change", function () {
        boxes.forEach(function (box) { box.checked = all.checked; });
        count();
      });
      boxes.forEach(function (box) { box.addEventListener("change", count); });
      count();
    });

    document.querySelectorAll("form[data-busy-label]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        const button = event.submitter || form.querySelector("button[type=submit]");
        if (!button) return;
        // After the browser has collected the form data.
        window.setTimeout(function () {
          button.disabled = true;
          button.textContent = button.dataset.busyLabel || form.dataset.busyLabel;
        }, 0);
      });
    });
  });
})();
