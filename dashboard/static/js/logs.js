/* The run page's log: lines arrive over the event stream already rendered by the server; they
 * are appended in stream order, capped, and followed when "follow" is ticked. */

const MAX_LOG_LINES = 5000;

/** Compare Redis stream ids ("1700000000000-3"). */
function after(a, b) {
  const [am, as] = String(a).split("-").map(Number);
  const [bm, bs] = String(b).split("-").map(Number);
  return am > bm || (am === bm && (as || 0) > (bs || 0));
}

export function logView(list) {
  const follow = document.getElementById("follow");
  const empty = document.getElementById("logs-empty");
  let pending = false;
  const scroll = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; list.scrollTop = list.scrollHeight; });
  };
  if (follow) follow.addEventListener("change", () => { if (follow.checked) scroll(); });
  if (!follow || follow.checked) scroll();
  return {
    /** The stream id of the newest line shown (the event stream resumes after it). */
    cursor: () => list.dataset.logsCursor || "0-0",
    append(line) {
      if (!line || !line.id || !line.html || !after(line.id, this.cursor())) return;
      list.dataset.logsCursor = line.id;
      const parsed = new DOMParser().parseFromString(line.html, "text/html");
      const item = parsed.body.firstElementChild;
      if (!item) return;
      item.classList.add("fresh");
      list.append(item);
      while (list.childElementCount > MAX_LOG_LINES) list.firstElementChild.remove();
      if (empty) empty.hidden = true;
      if (!follow || follow.checked) scroll();
    },
  };
}
