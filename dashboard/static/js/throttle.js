/* Call an async function at most once per `ms`; the last call is never lost and two runs
 * never overlap. */

export function throttle(fn, ms) {
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
