/* Live regions: an element with data-fragment is re-rendered by the server (the same partial
 * template as the page) and swapped in. Scroll positions of [data-keep-scroll] children and
 * the focused element's id survive the swap. */

import { throttle } from "./throttle.js";
import { setLive } from "./live.js";

function swap(region, html) {
  const kept = new Map();
  for (const node of region.querySelectorAll("[data-keep-scroll][id]")) {
    kept.set(node.id, node.scrollTop);
  }
  const focused = document.activeElement && region.contains(document.activeElement)
    ? document.activeElement.id : "";
  const parsed = new DOMParser().parseFromString(html, "text/html");
  region.replaceChildren(...parsed.body.childNodes);
  for (const [id, top] of kept) {
    const node = document.getElementById(id);
    if (node) node.scrollTop = top;
  }
  if (focused) document.getElementById(focused)?.focus();
  region.dispatchEvent(new CustomEvent("fragment:swapped", { bubbles: true }));
}

/** A throttled refresh of `region` from its data-fragment URL. */
export function refresher(region, ms = 1000) {
  return throttle(async () => {
    const res = await fetch(region.dataset.fragment, { headers: { Accept: "text/html" } });
    if (!res.ok) throw new Error(`${region.dataset.fragment}: HTTP ${res.status}`);
    swap(region, await res.text());
    setLive(true);
  }, ms);
}

/** Whether the region's content says more can change (data-active on its root). */
export function isActive(region) {
  const root = region.querySelector(".live-root");
  return !root || root.dataset.active !== "0";
}
