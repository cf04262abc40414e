/* Heartbeat ages on the workers page tick every second between refreshes: each cell carries
 * its age (data-age, seconds) as of when it was rendered. */

function duration(s) {
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function tickAges(root, staleAfter = 10) {
  const seen = new WeakMap();
  setInterval(() => {
    const now = Date.now();
    for (const cell of root.querySelectorAll("[data-age]")) {
      if (!seen.has(cell)) seen.set(cell, now);
      const age = Number(cell.dataset.age) + (now - seen.get(cell)) / 1000;
      cell.textContent = `${duration(age)} ago`;
      cell.classList.toggle("stale", age > staleAfter);
    }
  }, 1000);
}
