// Refreshes the overview's counts every 5 s without reloading the page. Nothing else.
"use strict";
(function () {
  const table = document.querySelector("[data-refresh]");
  if (!table) return;
  const url = table.getAttribute("data-refresh");

  function shown(value) {
    return value === null || value === undefined ? "—" : String(value);
  }

  function ago(iso) {
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return seconds + " s ago";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min ago";
    const hours = Math.floor(minutes / 60);
    if (hours < 24) return hours + " h " + (minutes % 60) + " min ago";
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h ago";
  }

  async function refresh() {
    try {
      const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!response.ok) return;
      const data = await response.json();
      document.querySelectorAll("[data-queue][data-field]").forEach(function (cell) {
        const queue = data.queues[cell.getAttribute("data-queue")];
        if (queue) cell.textContent = shown(queue[cell.getAttribute("data-field")]);
      });
      document.querySelectorAll("tr[data-consumer]").forEach(function (row) {
        const name = row.getAttribute("data-consumer");
        const activity = data.activity[name];
        const dead = data.queues[table.getAttribute("data-prefix") + "." + name + ".dead"];
        if (!activity) return;
        row.querySelectorAll("[data-consumer-field]").forEach(function (cell) {
          const field = cell.getAttribute("data-consumer-field");
          if (field === "oldest_dead") {
            cell.textContent = activity.oldest_dead ? ago(activity.oldest_dead) : "—";
          } else {
            cell.textContent = shown(activity[field]);
          }
        });
        if (dead) row.classList.toggle("has-dead", Boolean(dead.ready));
      });
      const known = new Set(Array.from(document.querySelectorAll("[data-consumer]"), function (row) {
        return row.getAttribute("data-consumer");
      }));
      const troubled = data.troubled.join(" ");
      if (data.consumers.some(function (name) { return !known.has(name); }) ||
          troubled !== table.getAttribute("data-troubled")) {
        window.location.reload();  // a new consumer or a receiver's change: the server's markup
      }
    } catch (error) {
      // The next round tries again.
    }
  }
  window.setInterval(refresh, 5000);
})();
