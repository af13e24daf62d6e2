// Small DOM helpers. Everything that came from an agent or a user goes
// through text nodes (textContent), never through HTML parsing.

export const $ = (sel, root = document) => root.querySelector(sel);

// h("div", {class: "x", dataset: {id}}, "text", child) builds an element.
// String children become text nodes; attributes are set one by one.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children) append(el, c);
  return el;
}

function append(el, c) {
  if (c === undefined || c === null || c === false) return;
  if (Array.isArray(c)) { for (const x of c) append(el, x); return; }
  el.append(c instanceof Node ? c : document.createTextNode(String(c)));
}

// setText only touches the DOM when the text changes.
export function setText(el, text) {
  const s = text == null ? "" : String(text);
  if (el.textContent !== s) el.textContent = s;
}

export function clear(el) { el.replaceChildren(); }

const IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function bytes(n) {
  if (n == null || !isFinite(n)) return "";
  let i = 0; let v = Number(n);
  while (v >= 1024 && i < IEC.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${IEC[i]}`;
}

export function ago(ms, now = Date.now()) {
  if (!ms) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function when(iso) {
  const t = Date.parse(iso);
  if (!t) return "";
  return new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function toast(message, bad = false) {
  const box = document.getElementById("toasts");
  const el = h("div", { class: bad ? "toast bad" : "toast", role: bad ? "alert" : undefined }, message);
  box.append(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}
