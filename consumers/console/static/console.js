// Refreshes the overview's counts every 5 s without reloading the page. Nothing else.
"use strict";
(function () {
  const table = document.querySelector("[data-refresh]");
  if (!table) return;
  const url = table.getAttribute("data-refresh");
  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const data = await response.json();
      document.querySelectorAll("[data-queue][data-field]").forEach(function (cell) {
        const queue = data.queues[cell.getAttribute("data-queue")];
        if (!queue) return;
        const value = queue[cell.getAttribute("data-field")];
        cell.textContent = value === null || value === undefined ? "—" : String(value);
      });
      const known = new Set(Array.from(document.querySelectorAll("[data-consumer]"), function (row) {
        return row.getAttribute("data-consumer");
      }));
      if (data.consumers.some(function (name) { return !known.has(name); })) {
        window.location.reload();  // a new consumer: its row needs the server's markup
      }
    } catch (error) {
      // The next round tries again.
    }
  }
  window.setInterval(refresh, 5000);
})();
