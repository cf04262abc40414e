/* The run page's buttons (cancel, retry): buttons with data-action inside a region with
 * data-actions POST to `<data-actions>/<action>` with the action header, then the region is
 * refreshed. Delegated, so the buttons of every swapped-in fragment work. */

const CONFIRM = {
  cancel: "Cancel this flow run? Queued task runs are dropped and running ones are stopped.",
};

export function actions(region, notice, refresh) {
  const show = (text, isError) => {
    if (!notice) return;
    notice.textContent = text;
    notice.classList.toggle("error", Boolean(isError));
    notice.hidden = false;
  };
  region.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const action = button.dataset.action;
    if (CONFIRM[action] && !window.confirm(CONFIRM[action])) return;
    button.disabled = true;
    try {
      const res = await fetch(`${region.dataset.actions}/${action}`, {
        method: "POST", headers: { "X-Flowkit-Action": "1", Accept: "application/json" },
      });
      let body;
      try { body = await res.json(); } catch (_) { body = { error: res.statusText }; }
      show(`${action}: ${JSON.stringify(body)}`, !res.ok);
    } catch (err) {
      show(`${action} failed: ${err}`, true);
    } finally {
      refresh();
    }
  });
}
