/* flowkit dashboard: wires the live regions of whichever page this is. The server renders
 * every piece of HTML; this code only listens, throttles, swaps and appends. No framework,
 * no build step. */

import { actions } from "./actions.js";
import { tickAges } from "./ages.js";
import { filterForm } from "./filters.js";
import { isActive, refresher } from "./fragments.js";
import { subscribe } from "./live.js";
import { logView } from "./logs.js";

function wire(region) {
  const refresh = refresher(region);
  const list = document.getElementById("logs");
  const logs = list && region.dataset.events && region.dataset.events.includes("run=")
    ? logView(list) : null;
  if (region.dataset.events) {
    const onlyId = region.dataset.eventId; // a task page follows one task run of its flow run
    const url = () => (logs
      ? `${region.dataset.events}&logs_after=${encodeURIComponent(logs.cursor())}`
      : region.dataset.events);
    subscribe(url, {
      flow: () => { if (!onlyId) refresh(); },
      task: (data) => { if (!onlyId || data.id === onlyId) refresh(); },
      log: logs ? (line) => { logs.append(line); if (line.task_run_id) refresh(); } : null,
      open: refresh, // catch up on whatever changed while no stream was open
    });
  }
  if (region.dataset.actions) actions(region, document.getElementById("notice"), refresh);
  // Safety net while anything can still change: not every change is an event, and one can
  // be missed during a reconnect.
  const pollActive = Number(region.dataset.pollActive || 0);
  if (pollActive) {
    setInterval(() => { if (!document.hidden && isActive(region)) refresh(); }, pollActive);
  }
  const poll = Number(region.dataset.poll || 0);
  if (poll) {
    setInterval(() => { if (!document.hidden) refresh(); }, poll);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  }
}

function start() {
  for (const region of document.querySelectorAll("[data-live][data-fragment]")) {
    try {
      wire(region);
    } catch (err) {
      console.error("flowkit:", region.id, err);
    }
  }
  const form = document.getElementById("filters");
  if (form) filterForm(form);
  const workers = document.getElementById("workers-live");
  if (workers) tickAges(workers);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
