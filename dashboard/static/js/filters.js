/* The runs page's filter form: datetime-local inputs hold local time, the query string holds
 * epoch seconds (hidden inputs); empty fields stay out of the URL. */

const pad = (n) => String(n).padStart(2, "0");

function localInput(epoch) {
  const d = new Date(epoch * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function filterForm(form) {
  const pairs = [["filter-since", "since"], ["filter-until", "until"]];
  for (const [id, name] of pairs) {
    const input = document.getElementById(id);
    const hidden = form.elements.namedItem(name);
    if (input && hidden && hidden.value) input.value = localInput(Number(hidden.value));
  }
  form.addEventListener("submit", () => {
    for (const [id, name] of pairs) {
      const input = document.getElementById(id);
      const hidden = form.elements.namedItem(name);
      if (!input || !hidden) continue;
      const ms = input.value ? new Date(input.value).getTime() : NaN;
      hidden.value = Number.isFinite(ms) ? String(ms / 1000) : "";
    }
  });
  form.addEventListener("formdata", (event) => {
    for (const [key, value] of [...event.formData.entries()]) {
      if (value === "") event.formData.delete(key);
    }
  });
}
