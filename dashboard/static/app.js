/* flowkit dashboard: live updates for the server-rendered pages. No framework, no build step.
 * Every string from the server goes into the page with textContent or setAttribute, never
 * innerHTML. Each page's code runs only when that page's elements are present. */
"use strict";

(() => {
  const TERMINAL = new Set(["completed", "cached", "failed", "timed_out", "crashed", "cancelled"]);
  const RETRYABLE = ["failed", "crashed", "timed_out"];
  const STATES = (document.body.dataset.states || "pending scheduled running retrying completed " +
                  "cached failed timed_out crashed cancelled").split(/\s+/).filter(Boolean);
  const MAX_LOG_LINES = 5000;
  const POLL_MS = 2000;

  // ---- helpers ---------------------------------------------------------------------------

  const $ = (selector, root = document) => root.querySelector(selector);
  const enc = encodeURIComponent;

  /** A new element: attrs are set as attributes ("class", "text" and "style" are special),
   * children are nodes or text. */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const pad = (n) => String(n).padStart(2, "0");

  /** Like the server's `when`: HH:MM:SS local time, with the date when not today. */
  function when(ts) {
    if (!ts) return "-";
    const d = new Date(ts * 1000);
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    if (d.toDateString() === new Date().toDateString()) return time;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
  }

  /** Like the server's `duration`: "120 ms", "3.4 s", "2 min 3 s", "1 h 5 min". */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "-";
    const s = Number(seconds);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  const ago = (ts) => (ts ? `${duration(Math.max(0, Date.now() / 1000 - ts))} ago` : "-");
  const pct = (value) => `${Math.max(0, Math.min(100, Number(value) || 0))}%`;

  function badge(state, id) {
    const s = state || "unknown";
    return el("span", { id, class: `badge state-${s}` }, s);
  }

  function setBadge(node, state) {
    if (!node) return;
    const s = state || "unknown";
    node.className = `badge state-${s}`;
    node.textContent = s;
  }

  function timeCell(ts) {
    return ts ? el("time", { title: ago(ts) }, when(ts)) : el("span", { class: "muted" }, "-");
  }

  function countsText(counts) {
    return STATES.filter((s) => counts && counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
  }

  function stack(counts, total) {
    const node = el("div", { class: "stack", title: countsText(counts) || "no tasks" });
    for (const s of STATES) {
      if (!counts || !counts[s] || !total) continue;
      const seg = el("span", { class: `seg state-${s}` });
      seg.style.width = `${((100 * counts[s]) / total).toFixed(2)}%`;
      node.append(seg);
    }
    return node;
  }

  function progressBits(percent, label) {
    const bar = el("div", { class: "progress-bar" });
    bar.style.width = pct(percent);
    return [el("div", { class: "progress-track" }, bar), el("span", { class: "progress-label" }, label)];
  }

  /** Compare Redis stream ids ("1700000000000-3"). */
  function streamIdAfter(a, b) {
    const [am, as] = String(a).split("-").map(Number);
    const [bm, bs] = String(b).split("-").map(Number);
    return am > bm || (am === bm && (as || 0) > (bs || 0));
  }

  /** Call fn at most once per `ms` (the last call is never lost); never two at once. */
  function throttle(fn, ms) {
    let last = 0;
    let timer = null;
    let running = false;
    let again = false;
    const run = async () => {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      last = Date.now();
      try {
        await fn();
      } catch (err) {
        console.warn("flowkit: refresh failed", err);
      } finally {
        running = false;
      }
      if (again) { again = false; schedule(); }
    };
    const schedule = () => {
      if (timer) return;
      timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
    };
    return schedule;
  }

  async function getJSON(url) {
    const res = await fetch(url, { headers: { Accept: "application/json" } });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    return res.json();
  }

  /** The header's live indicator. */
  function setLive(on, why) {
    const node = $("#live");
    if (!node) return;
    node.hidden = false;
    node.classList.toggle("on", on);
    node.classList.toggle("off", !on);
    node.textContent = on ? "live" : "reconnecting…";
    node.title = on ? "Live updates on" : `Live updates interrupted${why ? `: ${why}` : ""}`;
  }

  /** Server-sent events from `url()` (called again on each reconnect, so it can carry the
   * latest cursor). handlers: {flow, task, log, open}. */
  function live(url, handlers) {
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
        if (event.data) { // "event: error" sent by the server: Redis is unreachable for now
          let message = "";
          try { message = JSON.parse(event.data).message; } catch (_) { /* not JSON */ }
          setLive(false, message);
          return;
        }
        // Connection lost: reconnect ourselves so that the URL carries the newest cursor.
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

  /** Run fn now and every `ms` while the tab is visible. */
  function poll(fn, ms) {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        await fn();
        setLive(true);
      } catch (err) {
        setLive(false, String(err));
        console.warn("flowkit: refresh failed", err);
      } finally {
        busy = false;
      }
    };
    setInterval(tick, ms);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  }

  function replaceBody(table, rows, emptyText, columns) {
    const body = el("tbody");
    for (const row of rows) body.append(row);
    if (!rows.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: columns }, emptyText)));
    table.tBodies[0].replaceWith(body);
  }

  // ---- runs list -------------------------------------------------------------------------

  function runRow(r) {
    const name = el("td", { class: "name" },
      el("a", { class: "run-link", href: `/runs/${enc(r.id)}` }, r.name));
    if (r.attempt > 1) name.append(" ", el("span", { class: "muted small" }, `attempt ${r.attempt}`));
    if (r.parent) name.append(" ", el("a", { class: "muted small", href: `/runs/${enc(r.parent)}` }, "subflow"));
    for (const tag of Array.isArray(r.tags) ? r.tags : []) name.append(" ", el("span", { class: "tag" }, tag));
    const counts = r.task_counts || {};
    return el("tr", { "data-run-id": r.id, "data-state": r.state },
      name,
      el("td", { class: "id mono", title: r.id }, String(r.id).slice(0, 8)),
      el("td", { class: "state" }, badge(r.state)),
      el("td", { class: "tasks" }, stack(counts, r.task_total),
        el("span", { class: "tasks-text small muted" }, countsText(counts) || "no tasks")),
      el("td", { class: "progress" }, ...progressBits(r.progress_pct, `${r.task_finished}/${r.task_total}`)),
      el("td", { class: "started" }, timeCell(r.started)),
      el("td", { class: "duration num" }, duration(r.duration)));
  }

  /** "2024-05-01T12:30:00" in local time, for datetime-local inputs. */
  function localInput(epoch) {
    const d = new Date(epoch * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function initRuns() {
    const table = $("#runs");
    if (!table) return;
    const form = $("#filters");
    if (form) {
      const pairs = [["#filter-since", "since"], ["#filter-until", "until"]];
      for (const [selector, name] of pairs) {
        const input = $(selector);
        const hidden = form.elements.namedItem(name);
        if (input && hidden && hidden.value) input.value = localInput(Number(hidden.value));
      }
      form.addEventListener("submit", () => {
        for (const [selector, name] of pairs) {
          const input = $(selector);
          const hidden = form.elements.namedItem(name);
          if (!input || !hidden) continue;
          const ms = input.value ? new Date(input.value).getTime() : NaN;
          hidden.value = Number.isFinite(ms) ? String(ms / 1000) : "";
        }
      });
      // Empty fields stay out of the URL.
      form.addEventListener("formdata", (event) => {
        for (const [key, value] of [...event.formData.entries()]) {
          if (value === "") event.formData.delete(key);
        }
      });
    }

    const chips = $("#state-counts");
    const older = $("#older");
    const params = new URLSearchParams(location.search);
    const filtered = ["state", "name", "since", "until"].some((k) => params.get(k));

    const refresh = throttle(async () => {
      const page = await getJSON(`/api/runs${location.search}`);
      replaceBody(table, page.runs.map(runRow),
        filtered ? "No flow runs match these filters." : "No flow runs.", 7);
      if (chips) {
        const counts = page.counts || {};
        const total = Object.values(counts).reduce((a, b) => a + Number(b || 0), 0);
        for (const chip of chips.querySelectorAll(".chip")) {
          const state = chip.dataset.state;
          const n = state ? Number(counts[state] || 0) : total;
          const count = $(".chip-count", chip);
          if (count) count.textContent = String(n);
          if (state) chip.classList.toggle("zero", !n);
        }
      }
      if (older) {
        if (page.next_cursor === null || page.next_cursor === undefined) {
          older.hidden = true;
        } else {
          const next = new URLSearchParams(location.search);
          next.set("cursor", String(page.next_cursor));
          older.href = `/runs?${next}`;
          older.hidden = false;
        }
      }
    }, 1000);

    live(() => "/api/events", { flow: refresh, task: refresh, open: refresh });
  }

  // ---- one flow run ----------------------------------------------------------------------

  function taskRow(t) {
    const errorText = [t.error_type, t.error_message].filter(Boolean).join(": ");
    const error = el("td", { class: "error", title: errorText.slice(0, 2000) });
    if (t.error_type || t.error_message) {
      const message = String(t.error_message || "");
      error.append(el("span", { class: "error-type" }, t.error_type || ""),
        t.error_type && t.error_message ? ": " : "",
        message.length > 120 ? `${message.slice(0, 117)}...` : message);
    }
    return el("tr", { "data-task-id": t.id, "data-state": t.state },
      el("td", { class: "name" }, el("a", { class: "task-link", href: `/tasks/${enc(t.id)}` }, t.task_name)),
      el("td", { class: "state" }, badge(t.state)),
      el("td", { class: "attempts num" }, `${t.attempt} / ${Number(t.retries || 0) + 1}`),
      el("td", { class: "started" }, timeCell(t.started)),
      el("td", { class: "duration num" }, duration(t.duration)),
      el("td", { class: "worker mono small", title: t.worker || "" }, t.worker || "-"),
      el("td", { class: "cache" }, t.cache_hit
        ? el("span", { class: "cache-hit", title: "result read from the cache" }, "cache hit") : null),
      error);
  }

  function timelineNodes(timeline, tasks) {
    const byId = new Map(tasks.map((t) => [t.id, t]));
    if (!timeline || !timeline.bars || !timeline.bars.length) {
      return [el("p", { class: "muted empty" }, "No task run has started yet.")];
    }
    const nodes = [el("div", { class: "tl-axis" },
      el("span", { class: "tl-start" }, when(timeline.start)),
      el("span", { class: "tl-span" }, duration(timeline.end - timeline.start)),
      el("span", { class: "tl-end" }, when(timeline.end)))];
    for (const b of timeline.bars) {
      const t = byId.get(b.id);
      const bar = el("a", {
        class: `bar state-${b.state || "unknown"}`, href: `/tasks/${enc(b.id)}`,
        title: `${b.name} · ${b.state} · ${duration(t ? t.duration : null)}`,
      });
      bar.style.left = pct(b.start_pct);
      bar.style.width = pct(b.width_pct);
      nodes.push(el("div", { class: "tl-lane", "data-task-id": b.id },
        el("a", { class: "tl-label", href: `/tasks/${enc(b.id)}`, title: b.name }, b.name),
        el("div", { class: "tl-track" }, bar)));
    }
    return nodes;
  }

  function errorSection(run, id) {
    const section = el("section", { class: "card error-card", id }, el("h2", {}, "Error"),
      el("p", { class: "error-line" }, el("span", { class: "error-type" }, run.error_type || ""),
        run.error_type && run.error_message ? ": " : "",
        el("span", { class: "error-message" }, run.error_message || "")));
    if (run.traceback) section.append(el("pre", { id: "traceback", class: "code traceback" }, run.traceback));
    return section;
  }

  function initRun() {
    const main = $("main[data-run-id]");
    const table = $("#tasks");
    if (!main || !table) return;
    const runId = main.dataset.runId;
    const offset = Number(main.dataset.offset) || 0;
    const limit = Number(main.dataset.limit) || 100;
    let logCursor = main.dataset.logsCursor || "0-0";
    const logs = $("#logs");
    const follow = $("#follow");
    const cancel = $("#cancel");
    const retry = $("#retry");
    const notice = $("#notice");
    let state = main.dataset.runState || "";
    let retryable = retry ? !retry.disabled : false;
    let acting = false;
    // Task runs still moving (from the counts shown), so the safety-net poll knows when to stop.
    const ACTIVE = ["pending", "scheduled", "running", "retrying"];
    let activeTasks = [...document.querySelectorAll("#task-counts li[data-state]")]
      .some((li) => ACTIVE.includes(li.dataset.state));

    const buttons = () => {
      const terminal = TERMINAL.has(state);
      if (cancel) { cancel.hidden = terminal; cancel.disabled = terminal || acting; }
      if (retry) retry.disabled = !retryable || acting;
    };

    const setRunState = (next) => {
      if (!next) return;
      state = next;
      main.dataset.runState = next;
      setBadge($("#run-state"), next);
      buttons();
    };

    // Logs: follow keeps the list scrolled to its end.
    let scrollPending = false;
    const scrollLogs = () => {
      if (!logs || scrollPending) return;
      scrollPending = true;
      requestAnimationFrame(() => { scrollPending = false; logs.scrollTop = logs.scrollHeight; });
    };
    if (follow && follow.checked) scrollLogs();
    if (follow) follow.addEventListener("change", () => { if (follow.checked) scrollLogs(); });

    const appendLog = (line) => {
      if (!logs || !line || !line.id || !streamIdAfter(line.id, logCursor)) return;
      logCursor = line.id;
      main.dataset.logsCursor = line.id;
      const level = String(line.level || "").toLowerCase();
      const name = line.task_run_id
        ? el("a", { class: "log-name", href: `/tasks/${enc(line.task_run_id)}` }, line.name || "")
        : el("span", { class: "log-name" }, line.name || "");
      logs.append(el("li", { class: `log level-${level} fresh`, "data-log-id": line.id },
        el("time", { title: when(line.ts) }, when(line.ts)), " ",
        el("span", { class: "log-level" }, line.level || ""), " ", name, " ",
        el("span", { class: "log-msg" }, line.message || "")));
      while (logs.childElementCount > MAX_LOG_LINES) logs.firstElementChild.remove();
      const empty = $("#logs-empty");
      if (empty) empty.hidden = true;
      if (follow && follow.checked) scrollLogs();
    };

    const render = (d) => {
      const run = d.run;
      const counts = run.task_counts || {};
      retryable = RETRYABLE.some((s) => counts[s] > 0);
      activeTasks = ACTIVE.some((s) => counts[s] > 0);
      setRunState(run.state);

      const progress = $("#progress");
      if (progress) {
        progress.dataset.finished = run.task_finished;
        progress.dataset.total = run.task_total;
        progress.dataset.pct = run.progress_pct;
        progress.replaceChildren(...progressBits(run.progress_pct,
          `${run.task_finished} / ${run.task_total} tasks finished · ${run.progress_pct}%`));
        const oldStack = progress.nextElementSibling;
        if (oldStack && oldStack.classList.contains("stack")) oldStack.replaceWith(stack(counts, run.task_total));
      }
      const list = $("#task-counts");
      if (list) {
        const items = STATES.filter((s) => counts[s]).map((s) =>
          el("li", { "data-state": s }, badge(s), " ", el("span", { class: "count" }, String(counts[s]))));
        list.replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "no task runs yet")]));
      }
      const cell = (id, node) => { const n = $(id); if (n) n.replaceChildren(node); };
      cell("#run-started", timeCell(run.started));
      cell("#run-ended", timeCell(run.ended));
      cell("#run-duration", duration(run.duration));

      const params = $("#parameters");
      if (run.result && params && !$("#result")) {
        params.after(el("h2", {}, "Result"), el("pre", { id: "result", class: "code" }, run.result));
      }
      if (run.error_type || run.error_message || run.traceback) {
        const fresh = errorSection(run, "run-error");
        const old = $("#run-error");
        if (old) old.replaceWith(fresh);
        else { const grid = $(".grid", main); if (grid) grid.after(fresh); }
      }

      const timeline = $("#timeline");
      if (timeline) {
        const scroll = timeline.scrollTop;
        timeline.replaceChildren(...timelineNodes(d.timeline, d.tasks));
        timeline.scrollTop = scroll;
      }
      replaceBody(table, d.tasks.map(taskRow), offset ? "No task runs on this page." : "No task runs.", 8);
      const total = $("#task-total");
      if (total) total.textContent = String(d.page.total);
      renderPager(d.page);
    };

    const renderPager = (page) => {
      let pager = $("#task-pages");
      if (!(page.total > page.limit || page.offset)) { if (pager) pager.remove(); return; }
      const nodes = [];
      if (page.offset > 0) {
        const prev = Math.max(page.offset - page.limit, 0);
        nodes.push(el("a", { id: "tasks-prev", href: `/runs/${enc(runId)}${prev ? `?offset=${prev}` : ""}` },
          `← previous ${page.limit}`));
      }
      nodes.push(el("span", { class: "muted" },
        `tasks ${page.total ? page.offset + 1 : 0}–${Math.min(page.offset + page.limit, page.total)} of ${page.total}`));
      if (page.offset + page.limit < page.total) {
        nodes.push(el("a", { id: "tasks-next", href: `/runs/${enc(runId)}?offset=${page.offset + page.limit}` },
          `next ${Math.min(page.limit, page.total - page.offset - page.limit)} →`));
      }
      if (!pager) {
        pager = el("nav", { class: "pager pad", id: "task-pages" });
        table.after(pager);
      }
      pager.replaceChildren(...nodes);
    };

    const refresh = throttle(async () => {
      render(await getJSON(`/api/runs/${enc(runId)}?offset=${offset}&limit=${limit}`));
    }, 1000);

    const showNotice = (text, isError) => {
      if (!notice) return;
      notice.textContent = text;
      notice.classList.toggle("error", Boolean(isError));
      notice.hidden = false;
    };

    const act = async (kind) => {
      acting = true;
      buttons();
      try {
        const res = await fetch(`/api/runs/${enc(runId)}/${kind}`, {
          method: "POST", headers: { "X-Flowkit-Action": "1", Accept: "application/json" },
        });
        let body;
        try { body = await res.json(); } catch (_) { body = { error: res.statusText }; }
        showNotice(`${kind === "cancel" ? "Cancel" : "Retry"}: ${JSON.stringify(body)}`, !res.ok);
        if (res.ok && kind === "cancel") setRunState("cancelled");
      } catch (err) {
        showNotice(`${kind} failed: ${err}`, true);
      } finally {
        acting = false;
        buttons();
        refresh();
      }
    };
    if (cancel) cancel.addEventListener("click", () => act("cancel"));
    if (retry) retry.addEventListener("click", () => act("retry"));

    live(() => `/api/events?run=${enc(runId)}&logs_after=${enc(logCursor)}`, {
      log: (line) => {
        appendLog(line);
        // A task run that logs is running or just finished: worth a (throttled) look.
        if (line && line.task_run_id) refresh();
      },
      task: (data) => {
        const row = table.querySelector(`tr[data-task-id="${CSS.escape(String(data.id))}"]`);
        if (row && data.state) {
          row.dataset.state = data.state;
          setBadge($("td.state .badge", row), data.state);
        }
        const bar = $(`#timeline .tl-lane[data-task-id="${CSS.escape(String(data.id))}"] .bar`);
        if (bar && data.state) bar.className = `bar state-${data.state}`;
        refresh();
      },
      flow: (data) => {
        if (data.id === runId) setRunState(data.state);
        refresh();
      },
      open: refresh, // catch up on whatever changed while no stream was open
    });
    // Safety net while anything can still change: not every transition is an event (a task
    // run going from pending to running is not), and an event can be missed on a reconnect.
    setInterval(() => {
      if (!document.hidden && (!TERMINAL.has(state) || activeTasks)) refresh();
    }, POLL_MS);
  }

  // ---- one task run ----------------------------------------------------------------------

  function historyRow(h, index) {
    const details = el("td", { class: "details" });
    if (h.error_type) details.append(el("span", { class: "error-type" }, h.error_type), h.message ? ": " : "");
    if (h.message) details.append(el("span", { class: "message" }, h.message));
    if (h.retry_in !== undefined && h.retry_in !== null) {
      details.append(" ", el("span", { class: "retry-note" }, `retried after ${h.retry_in} s`));
    }
    if (h.delay !== undefined && h.delay !== null) {
      details.append(" ", el("span", { class: "retry-note" }, `delayed ${h.delay} s`));
    }
    return el("tr", { "data-state": h.state },
      el("td", { class: "num muted" }, String(index + 1)),
      el("td", { class: "num" }, h.attempt ? String(h.attempt) : "-"),
      el("td", { class: "state" }, badge(h.state)),
      el("td", {}, timeCell(h.ts)),
      el("td", { class: "mono small" }, h.worker || ""),
      details);
  }

  function initTask() {
    const main = $("main[data-task-id]");
    const history = $("#history");
    if (!main || !history) return;
    const taskId = main.dataset.taskId;
    const flowRunId = main.dataset.flowRunId;
    const refresh = throttle(async () => {
      const d = await getJSON(`/api/tasks/${enc(taskId)}`);
      setBadge($("#task-state"), d.task.state);
      const t = d.task;
      const cell = (id, node) => { const n = $(id); if (n) n.replaceChildren(node); };
      cell("#task-attempts", `${t.attempt} / ${Number(t.retries || 0) + 1}`);
      cell("#task-worker", t.worker || "-");
      cell("#task-started", timeCell(t.started));
      cell("#task-ended", timeCell(t.ended));
      cell("#task-duration", duration(t.duration));
      if (t.error_type || t.error_message || t.traceback) {
        const fresh = errorSection(t, "task-error");
        const old = $("#task-error");
        if (old) old.replaceWith(fresh);
        else { const grid = $(".grid", main); if (grid) grid.after(fresh); }
      }
      replaceBody(history, d.history.map(historyRow), "No state changes recorded.", 6);
    }, 1000);
    if (!flowRunId) return;
    live(() => `/api/events?run=${enc(flowRunId)}`, {
      task: (data) => { if (data.id === taskId) refresh(); },
      open: refresh,
    });
    setInterval(() => {
      const badge = $("#task-state");
      if (!document.hidden && badge && !TERMINAL.has(badge.textContent.trim())) refresh();
    }, POLL_MS);
  }

  // ---- workers ---------------------------------------------------------------------------

  function workerRow(w, fetchedAt) {
    const bar = el("div", { class: "progress-bar" });
    bar.style.width = pct(w.concurrency ? (100 * w.busy) / w.concurrency : 0);
    const queues = el("td", { class: "queues" });
    for (const q of Array.isArray(w.queues) ? w.queues : []) queues.append(el("span", { class: "tag" }, q), " ");
    const heartbeat = el("td", {
      class: `heartbeat${w.heartbeat_age > 10 ? " stale" : ""}`, title: when(w.heartbeat),
      "data-age": w.heartbeat_age, "data-fetched": fetchedAt,
    }, `${duration(w.heartbeat_age)} ago`);
    return el("tr", { "data-worker-id": w.id },
      el("td", { class: "id mono" }, w.id),
      el("td", { class: "host" }, w.host, " ", el("span", { class: "muted small" }, `pid ${w.pid}`)),
      el("td", { class: "state" }, el("span", { class: `wstate wstate-${w.state || "unknown"}` }, w.state || "-")),
      queues,
      el("td", { class: "busy" }, el("span", { class: "busy-text" }, `${w.busy}/${w.concurrency}`), " ",
        el("div", { class: "progress-track mini" }, bar)),
      heartbeat,
      el("td", { class: "started" }, w.started ? el("time", { title: ago(w.started) }, when(w.started)) : "-"),
      el("td", { class: "done num" }, String(w.tasks_done)),
      el("td", { class: `failed num${w.tasks_failed ? " has-failed" : ""}` }, String(w.tasks_failed)),
      el("td", { class: "version mono small" }, w.version || ""));
  }

  function initWorkers() {
    const table = $("#workers");
    if (!table) return;
    const loadedAt = Date.now();
    for (const cell of table.querySelectorAll("td.heartbeat")) {
      // Server-rendered rows: the age was right when the page was rendered.
      const match = /^([\d.]+) (ms|s)/.exec(cell.textContent.trim());
      if (match) {
        cell.dataset.age = String(match[2] === "ms" ? Number(match[1]) / 1000 : Number(match[1]));
        cell.dataset.fetched = String(loadedAt);
      }
    }
    // Ages tick every second between refreshes.
    setInterval(() => {
      for (const cell of table.querySelectorAll("td.heartbeat[data-age]")) {
        const age = Number(cell.dataset.age) + (Date.now() - Number(cell.dataset.fetched)) / 1000;
        cell.textContent = `${duration(age)} ago`;
        cell.classList.toggle("stale", age > 10);
      }
    }, 1000);
    poll(async () => {
      const data = await getJSON("/api/workers");
      const now = Date.now();
      replaceBody(table, data.workers.map((w) => workerRow(w, now)),
        "No live worker. Start one with `flowkit worker start`.", 10);
      const count = $("#workers-count");
      if (count) count.textContent = `${data.workers.length} live`;
    }, 5000);
  }

  // ---- queues ----------------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function sparkline(done, failed, width = 150, height = 28) {
    const top = Math.max(1, ...done, ...failed);
    const n = done.length;
    const step = width / (n > 1 ? n - 1 : 1);
    const points = (values) => values.map((v, i) =>
      `${(i * step).toFixed(1)},${(height - 2 - ((height - 4) * v) / top).toFixed(1)}`).join(" ");
    const svg = document.createElementNS(SVG, "svg");
    for (const [k, v] of Object.entries({ class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" })) {
      svg.setAttribute(k, String(v));
    }
    svg.setAttribute("aria-label", `done per minute: ${done.join(", ")}; failed: ${failed.join(", ")}`);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `done per minute (oldest first): ${done.join(" ")}\nfailed per minute: ${failed.join(" ")}`;
    svg.append(title);
    for (const [cls, values] of [["spark-done", done], ["spark-failed", failed]]) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", cls);
      line.setAttribute("fill", "none");
      line.setAttribute("points", points(values));
      svg.append(line);
    }
    return svg;
  }

  function queueRow(q) {
    const done = (q.done_per_minute || []).map(Number);
    const failed = (q.failed_per_minute || []).map(Number);
    return el("tr", { "data-queue": q.name },
      el("td", { class: "name" }, el("span", { class: "tag" }, q.name)),
      el("td", { class: "depth num" }, String(q.depth)),
      el("td", { class: "running num" }, String(q.running)),
      el("td", { class: `workers num${q.workers ? "" : " none"}` }, String(q.workers)),
      el("td", { class: "spark" }, el("div", { class: "spark-wrap" }, sparkline(done, failed),
        el("span", { class: "spark-peak small muted" }, `peak ${Math.max(0, ...done)}/min`))),
      el("td", { class: "done5 num" }, String(q.done_last_5_minutes)));
  }

  function initQueues() {
    const table = $("#queues");
    if (!table) return;
    poll(async () => {
      const data = await getJSON("/api/queues");
      replaceBody(table, data.queues.map(queueRow),
        "No queue yet: queues appear when a task is first submitted.", 6);
      const list = $("#dead-letters");
      if (list) {
        list.replaceChildren(...data.dead_letters.map((id) =>
          el("li", {}, el("a", { href: `/tasks/${enc(id)}` }, id))));
      }
      const empty = $("#dead-letters-empty");
      if (empty) empty.hidden = data.dead_letters.length > 0;
      const count = $("#dead-letter-count");
      if (count) count.textContent = String(data.dead_letters.length);
    }, 5000);
  }

  function start() {
    for (const init of [initRuns, initRun, initTask, initWorkers, initQueues]) {
      try {
        init();
      } catch (err) {
        console.error("flowkit:", init.name, err);
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
