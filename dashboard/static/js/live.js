/* The server-sent event client: connects, reconnects itself (so the URL can carry the newest
 * cursor), and shows the state of the connection in the header's live indicator. */

export function setLive(on, why) {
  const node = document.getElementById("live");
  if (!node) return;
  node.hidden = false;
  node.classList.toggle("on", on);
  node.classList.toggle("off", !on);
  node.textContent = on ? "live" : "reconnecting…";
  node.title = on ? "Live updates on" : `Live updates interrupted${why ? `: ${why}` : ""}`;
}

/** Events from `url()` (called again on each reconnect). handlers: {flow, task, log, open},
 * each given the event's parsed JSON data. */
export function subscribe(url, handlers) {
  if (!("EventSource" in window)) return;
  let source = null;
  let closed = false;
  const connect = () => {
    if (closed) return;
    source = new EventSource(url());
    source.addEventListener("open", () => {
      setLive(true);
      if (handlers.open) handlers.open();
    });
    source.addEventListener("error", (event) => {
      if (event.data) { // sent by the server: Redis is unreachable for now
        let message = "";
        try { message = JSON.parse(event.data).message; } catch (_) { /* not JSON */ }
        setLive(false, message);
        return;
      }
      setLive(false);
      source.close();
      setTimeout(connect, 2000);
    });
    for (const kind of ["flow", "task", "log"]) {
      if (!handlers[kind]) continue;
      source.addEventListener(kind, (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch (_) { return; }
        handlers[kind](data);
      });
    }
  };
  window.addEventListener("pagehide", () => { closed = true; if (source) source.close(); });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) { closed = false; connect(); } // back from the back-forward cache
  });
  connect();
}
