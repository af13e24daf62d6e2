// lpmos dashboard: one WebSocket (/ws) feeds an in-memory model of tasks,
// machines and regions; the task list is virtualised (only visible rows
// exist) and rows are updated in place, keyed by task id.
import { $, h, setText, clear, bytes, ago, when, toast } from "./dom.js";
import { paintPowerCell, renderPower, applyPowerMessage, wirePower } from "./power.js";

const STATUSES = ["pending", "ready", "pending_approval", "approved", "installing", "stalled", "completed", "failed", "cancelled"];
const LABEL = {
  pending: "Pending", ready: "Ready", pending_approval: "Awaiting approval", approved: "Approved",
  installing: "Installing", stalled: "Stalled", completed: "Completed", failed: "Failed", cancelled: "Cancelled",
};
const ACTIVE = new Set(["pending", "ready", "pending_approval", "approved", "installing", "stalled"]);
const ROW_H = 52;
const OVERSCAN = 8;

const state = {
  csrf: "",
  tasks: new Map(),     // id -> task (store.Task plus cached sort keys)
  machines: new Map(),  // mac -> machine
  regions: new Map(),   // id -> {region, live, since}
  rates: new Map(),     // id -> {bytes, t, rate}
  view: [],             // ids after filter + sort
  rows: new Map(),      // id -> row element (visible rows only)
  pool: [],             // detached row elements for reuse
  selected: "",
  checked: new Set(),   // ids ticked for a bulk action
  events: [],           // timeline of the selected task
  detail: null,         // the selected task in full (GET /api/v1/tasks/{id}); /ws carries summaries
  detailBusy: "", detailAgain: "",
  filter: { q: "", status: "", region: "" },
  sort: "created",
  ws: null, attempt: 0, relayoutQueued: false, revision: 0,
};

// ---------- model ----------

function hostOf(t) {
  return t.spec.hostname || (t.hardware && t.hardware.hostname) || "";
}

function index(t) {
  t._created = Date.parse(t.spec.created_at) || 0;
  const su = Date.parse(t.status.updated_at) || 0;
  const pu = t.progress ? Date.parse(t.progress.updated_at) || 0 : 0;
  t._updated = Math.max(su, pu, t._created);
  t._hay = [t.id, t.spec.target_mac, t.spec.hostname, t.hardware && t.hardware.hostname,
    t.hardware && t.hardware.dmi && t.hardware.dmi.product, t.hardware && t.hardware.dmi && t.hardware.dmi.serial]
    .filter(Boolean).join(" ").toLowerCase();
  return t;
}

function matches(t) {
  const f = state.filter;
  if (f.status && t.status.status !== f.status) return false;
  if (f.region && t.spec.region_id !== f.region) return false;
  if (f.q) {
    const q = f.q.toLowerCase();
    const qmac = q.replace(/-/g, ":");
    if (!t._hay.includes(q) && !t._hay.includes(qmac)) return false;
  }
  return true;
}

const SORTS = {
  created: (a, b) => b._created - a._created || (a.id < b.id ? -1 : 1),
  updated: (a, b) => b._updated - a._updated || b._created - a._created,
  status: (a, b) => STATUSES.indexOf(a.status.status) - STATUSES.indexOf(b.status.status) || b._created - a._created,
  host: (a, b) => (hostOf(a) || "\uffff").localeCompare(hostOf(b) || "\uffff") || a.spec.target_mac.localeCompare(b.spec.target_mac),
  progress: (a, b) => pct(b) - pct(a) || b._created - a._created,
};

function pct(t) { return t.progress ? t.progress.percentage : (t.status.status === "completed" ? 100 : -1); }

// Structural changes (order, filter membership) are applied once per frame.
function scheduleRelayout() {
  if (state.relayoutQueued) return;
  state.relayoutQueued = true;
  requestAnimationFrame(() => { state.relayoutQueued = false; relayout(); });
}

function relayout() {
  const list = [];
  for (const t of state.tasks.values()) if (matches(t)) list.push(t);
  list.sort(SORTS[state.sort]);
  state.view = list.map((t) => t.id);
  $("#task-spacer").style.height = `${state.view.length * ROW_H}px`;
  setText($("#shown"), state.view.length === state.tasks.size ? `${state.tasks.size} task${state.tasks.size === 1 ? "" : "s"}` : `${state.view.length} of ${state.tasks.size} tasks`);
  $("#task-empty").hidden = state.view.length > 0;
  $("#task-table").setAttribute("aria-rowcount", String(state.view.length + 1));
  renderRows(true);
  renderSummary();
  paintBulk();
}

// ---------- bulk select ----------

function setChecked(id, on) { if (on) state.checked.add(id); else state.checked.delete(id); }

function paintBulk() {
  for (const id of state.checked) if (!state.tasks.has(id)) state.checked.delete(id);
  const n = state.checked.size;
  $("#bulk").hidden = n === 0;
  setText($("#bulk-count"), `${n} selected`);
  const all = $("#select-all");
  const shown = state.view.filter((id) => state.checked.has(id)).length;
  all.checked = shown > 0 && shown === state.view.length;
  all.indeterminate = shown > 0 && shown < state.view.length;
  for (const [id, row] of state.rows) row.querySelector(".sel").checked = state.checked.has(id);
}

// selectAllShown ticks (or unticks) every task the filter shows.
function selectAllShown(on) {
  for (const id of state.view) setChecked(id, on);
  paintBulk();
}

const BULK = {
  approve: { verb: "Approve", ok: (st) => st === "pending_approval", done: "approved" },
  retry: { verb: "Retry", ok: (st) => st === "failed" || st === "cancelled", done: "queued again" },
  cancel: { verb: "Cancel", ok: (st) => ACTIVE.has(st), done: "cancelled" },
};

// bulkAct asks once, naming the count (and for Approve each machine and
// the disk it will erase), then acts through the API task by task.
async function bulkAct(kind, btn) {
  const b = BULK[kind];
  const tasks = [...state.checked].map((id) => state.tasks.get(id)).filter(Boolean);
  const todo = tasks.filter((t) => b.ok(t.status.status));
  if (!todo.length) { toast(`None of the ${tasks.length} selected task(s) can be ${b.done}.`, true); return; }
  const noun = `${todo.length} task${todo.length === 1 ? "" : "s"}`;
  const skipped = tasks.length - todo.length;
  let msg = `${b.verb} ${noun}?`;
  if (skipped) msg += ` (${skipped} other selected task(s) cannot be ${b.done} and are left alone.)`;
  if (kind === "approve") {
    const lines = todo.slice(0, 10).map((t) => `• ${hostOf(t) || "(no hostname)"} (MAC ${t.spec.target_mac}): ${t.target_disk ? `ERASE ${diskShort(t.target_disk)}` : "agent chooses the disk"}`);
    if (todo.length > 10) lines.push(`… and ${todo.length - 10} more`);
    msg += `\n\nThis will ERASE a disk on each machine:\n${lines.join("\n")}`;
  } else if (kind === "cancel") msg += "\n\nThese machines will not be provisioned.";
  if (!confirm(msg)) return;
  btn.disabled = true;
  const path = (t) => `/api/v1/tasks/${encodeURIComponent(t.id)}${kind === "cancel" ? "" : `/${kind}`}`;
  const method = { approve: "PUT", retry: "POST", cancel: "DELETE" }[kind];
  const results = await Promise.allSettled(todo.map((t) =>
    api(method, path(t), kind === "approve" && t.target_disk ? { disk: t.target_disk.name } : undefined)));
  btn.disabled = false;
  const failed = results.map((r, i) => [r, todo[i]]).filter(([r]) => r.status === "rejected");
  for (const [, t] of results.map((r, i) => [r, todo[i]]).filter(([r]) => r.status === "fulfilled")) state.checked.delete(t.id);
  paintBulk();
  if (failed.length) toast(`${todo.length - failed.length} of ${noun} ${b.done}; ${failed.length} failed: ${failed.map(([r, t]) => `${hostOf(t) || t.spec.target_mac}: ${r.reason.message}`).join("; ")}`, true);
  else toast(`${noun} ${b.done}`);
}

// ---------- virtualised task rows ----------

function renderRows(moved) {
  const sc = $("#task-scroll");
  const first = Math.max(0, Math.floor(sc.scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min(state.view.length, Math.ceil((sc.scrollTop + sc.clientHeight) / ROW_H) + OVERSCAN);
  const want = new Set(state.view.slice(first, last));
  for (const [id, el] of state.rows) {
    if (!want.has(id)) { el.remove(); state.rows.delete(id); state.pool.push(el); }
  }
  for (let i = first; i < last; i++) {
    const id = state.view[i];
    let el = state.rows.get(id);
    if (!el) {
      el = state.pool.pop() || makeRow();
      el.dataset.id = id;
      updateRow(el, state.tasks.get(id));
      state.rows.set(id, el);
      sc.append(el);
    } else if (!moved) continue;
    el.style.transform = `translateY(${i * ROW_H}px)`;
    el.setAttribute("aria-rowindex", String(i + 2));
  }
}

function makeRow() {
  const box = h("input", { type: "checkbox", class: "sel", "aria-label": "Select task" });
  const row = h("div", { class: "tr", role: "row", tabindex: "0" },
    h("span", { role: "cell", class: "selcol" }, box),
    h("span", { role: "cell", class: "stcell" }, h("span", { class: "badge" })),
    h("span", { role: "cell", class: "host" }, h("b"), h("small")),
    h("span", { role: "cell", class: "mono mac c-mac" }),
    h("span", { role: "cell", class: "region c-region" }),
    h("span", { role: "cell", class: "os c-os" }),
    h("span", { role: "cell", class: "prog c-prog" },
      h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, h("div", { class: "fill" })),
      h("p", { class: "ptext" })),
    h("span", { role: "cell", class: "muted upd c-upd" }));
  box.addEventListener("click", (e) => e.stopPropagation());
  box.addEventListener("change", () => { setChecked(row.dataset.id, box.checked); paintBulk(); });
  row.addEventListener("click", () => select(row.dataset.id));
  row.addEventListener("keydown", (e) => { if (e.target === box) return; if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(row.dataset.id); } });
  return row;
}

function updateRow(row, t) {
  if (!t) return;
  const st = t.status.status;
  const badge = row.querySelector(".badge");
  badge.dataset.status = st;
  setText(badge, LABEL[st] || st);
  const host = hostOf(t);
  setText(row.querySelector(".host b"), host || "(no hostname)");
  const hw = t.hardware;
  const sub = hw ? [hw.hostname && hw.hostname !== host ? hw.hostname : "", hw.dmi && hw.dmi.product].filter(Boolean).join(" · ") : "";
  setText(row.querySelector(".host small"), sub);
  setText(row.querySelector(".mac"), t.spec.target_mac);
  setText(row.querySelector(".region"), t.spec.region_id);
  setText(row.querySelector(".os"), `${t.spec.os_type} ${t.spec.os_version}`);
  paintProgress(row.querySelector(".bar"), row.querySelector(".ptext"), t, false);
  setText(row.querySelector(".upd"), ago(t._updated));
  paintPowerCell(row, t);
  row.setAttribute("aria-selected", String(t.id === state.selected));
  row.querySelector(".sel").checked = state.checked.has(t.id);
}

function paintProgress(bar, text, t, long) {
  const p = t.progress;
  const st = t.status.status;
  let w = 0;
  let label = "";
  if (p && (st === "installing" || st === "stalled" || st === "completed" || st === "failed")) {
    w = st === "completed" ? 100 : p.percentage;
    const parts = [`${w}%`, p.stage];
    if (p.message) parts.push(p.message);
    if (p.bytes_total) parts.push(`${bytes(p.bytes_done)} / ${bytes(p.bytes_total)}`);
    if (st === "installing") { const tp = throughput(t); if (tp) parts.push(tp); }
    label = parts.filter(Boolean).join(" · ");
  } else if (st === "completed") {
    w = 100; label = "100% · completed";
  } else if (st === "pending_approval") {
    const d = t.target_disk;
    label = long ? "Hardware reported: waiting for your approval." : (d ? `will erase ${diskShort(d)}` : "waiting for approval");
  } else if (st === "approved") {
    label = "approved: waiting for the agent";
  } else if (st === "failed" || st === "cancelled") {
    label = t.status.reason || st;
  } else {
    label = st === "ready" ? "waiting for the machine to boot" : "waiting for a region";
  }
  bar.dataset.status = st;
  bar.setAttribute("aria-valuenow", String(w));
  bar.setAttribute("aria-valuetext", label);
  const fill = bar.firstElementChild;
  const width = `${w}%`;
  if (fill.style.width !== width) fill.style.width = width;
  setText(text, label);
}

// throughput says how fast an install moves and when it should be done,
// from successive progress reports: "12.3 MB/s, ETA 01:05" with bytes,
// "ETA 01:05" from the percentage alone.
function throughput(t) {
  const r = state.rates.get(t.id);
  const p = t.progress;
  if (!r || !p) return "";
  let eta = -1;
  const out = [];
  if (r.rate > 0) {
    out.push(`${(r.rate / 1e6).toFixed(r.rate >= 1e8 ? 0 : 1)} MB/s`);
    if (p.bytes_total > p.bytes_done) eta = (p.bytes_total - p.bytes_done) / r.rate;
  }
  if (eta < 0 && r.prate > 0 && p.percentage < 100) eta = (100 - p.percentage) / r.prate;
  if (eta >= 0) out.push(`ETA ${clock(eta)}`);
  return out.join(", ");
}

function clock(sec) {
  const s = Math.max(0, Math.round(sec));
  const two = (n) => String(n).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}` : `${two(Math.floor(s / 60))}:${two(s % 60)}`;
}

// trackRate folds one progress report into the task's smoothed rates
// (bytes/s and percent/s); a new stage or a step back starts over.
function trackRate(id, m, at) {
  const prev = state.rates.get(id);
  const fresh = { stage: m.stage, t: at, bytes: m.bytes_done || 0, pct: m.percentage, rate: 0, prate: 0 };
  if (!prev || prev.stage !== m.stage || at <= prev.t) {
    if (prev && prev.stage === m.stage && at <= prev.t) return; // same instant: keep the estimate
    state.rates.set(id, fresh);
    return;
  }
  const dt = (at - prev.t) / 1000;
  const smooth = (old, inst) => (old > 0 ? old * 0.6 + inst * 0.4 : inst);
  if (fresh.bytes > prev.bytes) fresh.rate = smooth(prev.rate, (fresh.bytes - prev.bytes) / dt);
  else if (fresh.bytes === prev.bytes && fresh.bytes > 0) fresh.rate = prev.rate;
  if (fresh.pct > prev.pct) fresh.prate = smooth(prev.prate, (fresh.pct - prev.pct) / dt);
  else if (fresh.pct === prev.pct) fresh.prate = prev.prate;
  state.rates.set(id, fresh);
}

function refreshTask(id) {
  const t = state.tasks.get(id);
  const row = state.rows.get(id);
  if (row && t) updateRow(row, t);
  if (id === state.selected) renderDetail();
}

// ---------- summary chips ----------

function renderSummary() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  for (const t of state.tasks.values()) counts[t.status.status] = (counts[t.status.status] || 0) + 1;
  const box = $("#summary");
  if (!box.childElementCount) {
    box.append(h("button", { type: "button", class: "chip", dataset: { status: "" }, "aria-pressed": "true", onclick: () => setStatusFilter("") },
      "All ", h("b")));
    for (const s of STATUSES) {
      box.append(h("button", { type: "button", class: "chip", dataset: { status: s }, "aria-pressed": "false", onclick: () => setStatusFilter(s) },
        h("span", { class: "sw" }), LABEL[s], " ", h("b")));
    }
  }
  for (const chip of box.children) {
    const s = chip.dataset.status;
    setText(chip.querySelector("b"), s ? counts[s] : state.tasks.size);
    chip.setAttribute("aria-pressed", String(state.filter.status === s));
    chip.hidden = s !== "" && counts[s] === 0 && state.filter.status !== s;
  }
  setText($("#count-tasks"), state.tasks.size);
}

function setStatusFilter(s) {
  state.filter.status = s;
  $("#filter-status").value = s;
  relayout();
}

// ---------- detail panel ----------

// A URL per task: #/tasks/{id}. Selecting pushes a history entry, so the
// back button returns to the previous selection (or none).
function routeId() {
  const m = /^#\/tasks\/([^/?#]+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : "";
}

function pushRoute(id) {
  if (routeId() === id) return;
  history.pushState(null, "", id ? `#/tasks/${encodeURIComponent(id)}` : `${location.pathname}${location.search}`);
}

// applyRoute follows the URL (load, back, forward, an edited hash).
function applyRoute() {
  const id = routeId();
  if (!id) { closeDetail(false); return; } // also the "task not found" panel
  if (id === state.selected) return;
  if (state.tasks.has(id)) select(id, { push: false });
  else if (state.revision) showMissing(id);
}

// taskGone closes the detail of a task that was deleted, and takes the URL
// back to the list (replaced: back does not return to a deleted task).
function taskGone(id) {
  closeDetail(false);
  if (routeId() === id) history.replaceState(null, "", `${location.pathname}${location.search}`);
  toast(`Task ${id} was deleted`);
}

// showMissing: the URL names a task this cluster does not have (deleted,
// or a wrong link): the panel says so instead of staying blank.
function showMissing(id) {
  closeDetail(false);
  const d = $("#detail");
  d.dataset.missing = id;
  setText($("#d-title"), "Task not found");
  setText($("#d-id"), id);
  d.hidden = false;
  $(".layout").classList.add("with-detail");
}

async function select(id, opts = {}) {
  const { push = true, focus = true } = opts;
  if (push) pushRoute(id);
  const prev = state.rows.get(state.selected);
  const changed = state.selected !== id;
  state.selected = id;
  if (prev) prev.setAttribute("aria-selected", "false");
  const row = state.rows.get(id);
  if (row) row.setAttribute("aria-selected", "true");
  state.events = [];
  if (changed) state.detail = null;
  $("#detail").hidden = false;
  $(".layout").classList.add("with-detail");
  delete $("#detail").dataset.missing;
  renderDetail();
  if (changed || focus) {
    // A new selection starts at the top (Approve is there), with focus.
    const d = $("#detail");
    d.scrollTop = 0;
    if (focus) d.focus({ preventScroll: true });
    if (d.getBoundingClientRect().top < 0 || d.getBoundingClientRect().top > innerHeight) d.scrollIntoView({ block: "start" });
  }
  await loadDetail(id);
}

// loadDetail reads the selected task in full (hardware with disks and
// NICs, spec, events): the live view holds summaries only. A change of
// the task while a read is in flight asks for one more read after it.
async function loadDetail(id) {
  if (state.detailBusy === id) { state.detailAgain = id; return; }
  state.detailBusy = id;
  try {
    const d = await api("GET", `/api/v1/tasks/${encodeURIComponent(id)}`);
    if (state.selected !== id) return;
    state.detail = d;
    state.events = d.events || [];
    renderDetail();
    renderTimeline();
  } catch (e) {
    if (state.selected === id) toast(`Could not load the task's details: ${e.message}`, true);
  } finally {
    if (state.detailBusy === id) state.detailBusy = "";
    if (state.detailAgain === id) { state.detailAgain = ""; if (state.selected === id) loadDetail(id); }
  }
}

function closeDetail(push = true) {
  if (push) pushRoute("");
  const row = state.rows.get(state.selected);
  if (row) row.setAttribute("aria-selected", "false");
  state.selected = "";
  state.detail = null;
  $("#detail").hidden = true;
  $(".layout").classList.remove("with-detail");
  delete $("#detail").dataset.missing;
}

function renderDetail() {
  const t = state.tasks.get(state.selected);
  if (!t) { return; }
  const st = t.status.status;
  setText($("#d-title"), hostOf(t) || t.spec.target_mac);
  setText($("#d-id"), t.id);
  const badge = $("#d-badge");
  badge.dataset.status = st;
  setText(badge, LABEL[st] || st);
  setText($("#d-reason"), t.status.reason ? `${t.status.reason} · ${ago(Date.parse(t.status.updated_at))}` : ago(Date.parse(t.status.updated_at)));
  $("#approve").hidden = st !== "pending_approval";
  $("#cancel").hidden = !ACTIVE.has(st);
  $("#retry").hidden = !(st === "failed" || st === "cancelled");
  const showProg = !!t.progress || st === "completed";
  $("#d-progress").hidden = !showProg;
  if (showProg) paintProgress($("#d-bar"), $("#d-ptext"), t, true);

  const full = state.detail && state.detail.id === t.id ? state.detail : null;
  const spec = $("#d-spec");
  clear(spec);
  const kv = [["MAC", t.spec.target_mac], ["Region", t.spec.region_id], ["OS", `${t.spec.os_type} ${t.spec.os_version}`],
    ["Hostname", t.spec.hostname || "—"], ["Attempt", t.status.attempt], ["Created", when(t.spec.created_at)]];
  const keys = full && full.spec.ssh_authorized_keys;
  if (keys && keys.length) kv.push(["SSH keys", `${keys.length} key(s)`]);
  for (const [k, v] of kv) spec.append(h("dt", null, k), h("dd", null, v));
  // Until the full task is read: a reported hardware says "loading".
  renderHardware($("#hw"), full ? full.hardware || null : t.hardware ? undefined : null);
  renderPartitions(full);
  renderTargetDisk(t);
  renderPower(t);
}

// The disk the install erases: chosen by the server from the hardware
// report and the task's root-device hints, before approval.
function diskShort(d) { return `/dev/${d.name}, ${diskSize(d.size_bytes)}`; }
function diskSize(b) { return b >= 1e12 ? `${(b / 1e12).toFixed(1)} TB` : b >= 1e9 ? `${Math.round(b / 1e9)} GB` : bytes(b); }
function diskText(d) { return d.description || [`/dev/${d.name}`, diskSize(d.size_bytes), d.model, d.serial && `serial ${d.serial}`].filter(Boolean).join(", "); }

function renderTargetDisk(t) {
  const el = $("#d-disk");
  const st = t.status.status;
  const d = t.target_disk;
  let text = "";
  if (st === "pending_approval") text = d ? `Will erase ${diskText(d)}` : "The agent will choose the disk (smallest fixed disk that holds the image).";
  else if (d && (st === "approved" || st === "installing" || st === "stalled")) text = `Erasing ${diskText(d)}`;
  else if (d && st === "completed") text = `Installed on ${diskText(d)}`;
  else if (d) text = `Target disk: ${diskText(d)}`;
  el.hidden = !text;
  el.dataset.warn = st === "pending_approval" ? "1" : "0";
  setText(el, text);
  if (d) for (const tr of document.querySelectorAll("#hw-disks tbody tr")) tr.classList.toggle("target", tr.firstElementChild.textContent === d.name);
}

// parseHints reads "key=value,..." as the CLI's --root-device does; the
// server validates the result (400 naming the field).
function parseHints(text) {
  const h = {};
  const keys = { name: "name", serial: "serial", wwn: "wwn", model: "model", vendor: "vendor", "by-path": "by_path" };
  const units = { "": 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };
  for (const item of text.split(",")) {
    if (!item.trim()) continue;
    const i = item.indexOf("=");
    const k = (i < 0 ? item : item.slice(0, i)).trim().toLowerCase().replace(/_/g, "-");
    const v = i < 0 ? "" : item.slice(i + 1).trim();
    if (!v) throw new Error(`disk hint "${item.trim()}": want key=value`);
    if (keys[k]) h[keys[k]] = v;
    else if (k === "min-size" || k === "max-size") {
      const m = /^([0-9.]+)\s*([a-zA-Z]*)$/.exec(v);
      const mult = m && units[m[2].toLowerCase()];
      const n = m && Number(m[1]) * mult;
      if (!mult || !Number.isFinite(n) || n < 0 || n !== Math.floor(n)) throw new Error(`disk hint ${k}: "${v}" is not a size like 100G or 512GiB`);
      h[k === "min-size" ? "min_size_bytes" : "max_size_bytes"] = n;
    } else if (k === "rotational") {
      if (!/^(true|false)$/i.test(v)) throw new Error(`disk hint rotational: "${v}": want true or false`);
      h.rotational = v.toLowerCase() === "true";
    } else throw new Error(`disk hint "${k}": unknown (name, serial, wwn, model, vendor, by-path, min-size, max-size, rotational)`);
  }
  return Object.keys(h).length ? h : null;
}

// Approve asks first, naming the disk that will be erased; the approval
// names that disk too, so the server approves exactly what was shown.
async function approveSelected(btn) {
  const t = state.tasks.get(state.selected);
  if (!t) return;
  const d = t.target_disk;
  const host = hostOf(t);
  const who = host ? `${host} (MAC ${t.spec.target_mac})` : `MAC ${t.spec.target_mac}`;
  const msg = d ? `Approve the install of ${t.spec.os_type} ${t.spec.os_version} on ${who}?\n\nThis will ERASE ${diskText(d)}.`
    : `Approve the install of ${t.spec.os_type} ${t.spec.os_version} on ${who}?\n\nThe agent will choose the disk to erase (smallest fixed disk that holds the image).`;
  if (!confirm(msg)) return;
  btn.disabled = true;
  try {
    await api("PUT", `/api/v1/tasks/${encodeURIComponent(t.id)}/approve`, d ? { disk: d.name } : undefined);
    toast(d ? `Installation approved: erasing /dev/${d.name}` : "Installation approved");
  } catch (e) { toast(e.message, true); } finally { btn.disabled = false; }
}

// The partition table the agent left on disk (its last configuring
// report), with the file system and role it found in each partition.
function renderPartitions(t) {
  const old = $("#d-parts");
  if (old) old.remove();
  const pt = t && t.partitions;
  if (!pt || !(pt.partitions || []).length) return;
  $("#hw").append(h("table", { class: "mini", id: "d-parts" },
    h("caption", null, `Partitions left on disk (attempt ${pt.attempt})`),
    h("thead", null, h("tr", null, h("th", null, "#"), h("th", null, "Name"), h("th", null, "Size"), h("th", null, "File system"), h("th", null, "Role"))),
    h("tbody", null, pt.partitions.map((p) => h("tr", null,
      h("td", { class: "mono" }, String(p.number)), h("td", null, p.name || "—"), h("td", null, bytes(p.size_bytes)),
      h("td", null, p.fs || "—"), h("td", null, p.role || "—"))))));
}

function renderHardware(box, hw) {
  clear(box);
  if (hw === undefined) { // reported; the full report is being read
    box.append(h("p", { class: "muted" }, "Loading the hardware report…"));
    return;
  }
  if (!hw) {
    box.append(h("p", { class: "muted" }, "No report yet: the agent sends one when the machine boots."));
    return;
  }
  const c = hw.cpu || {}; const m = hw.memory || {}; const d = hw.dmi || {};
  const rows = [
    ["CPU", c.model || "unknown"],
    ["Topology", `${c.sockets || "?"} socket(s) · ${c.cores || "?"} cores · ${c.threads || "?"} threads`],
    ["Memory", m.total_bytes ? `${bytes(m.total_bytes)}` : `${m.total_gb || "?"} GB`],
    ["Boot mode", (hw.boot_mode || "unknown").toUpperCase()],
    ["Hostname", hw.hostname || "—"],
    ["System", [d.vendor, d.product].filter(Boolean).join(" ") || "—"],
    ["Serial", d.serial || "—"],
    ["UUID", d.uuid || "—"],
    ["BIOS", [d.bios_vendor, d.bios_version, d.bios_date].filter(Boolean).join(" · ") || "—"],
  ];
  if (hw.kernel) rows.push(["Kernel", hw.kernel]);
  if (hw.collected_at) rows.push(["Reported", when(hw.collected_at)]);
  box.append(h("dl", { class: "kv", id: "hw-kv" }, rows.map(([k, v]) => [h("dt", null, k), h("dd", { dataset: { k } }, v)])));
  const disks = hw.disks || [];
  box.append(h("table", { class: "mini", id: "hw-disks" },
    h("caption", { class: "sr" }, "Disks"),
    h("thead", null, h("tr", null, h("th", null, "Disk"), h("th", null, "Size"), h("th", null, "Model"), h("th", null, "Type"))),
    h("tbody", null, disks.length ? disks.map((x) => h("tr", null,
      h("td", { class: "mono" }, x.name), h("td", null, bytes(x.size_bytes)),
      h("td", null, [x.model || "—", x.serial && `serial ${x.serial}`].filter(Boolean).join(" · ")),
      h("td", null, `${x.rotational ? "HDD" : "SSD"}${x.removable ? ", removable" : ""}`)))
      : h("tr", null, h("td", { colspan: "4", class: "muted" }, "no disks reported")))));
  const nics = hw.nics || [];
  box.append(h("table", { class: "mini", id: "hw-nics" },
    h("caption", { class: "sr" }, "Network interfaces"),
    h("thead", null, h("tr", null, h("th", null, "NIC"), h("th", null, "MAC"), h("th", null, "Driver"), h("th", null, "Link"))),
    h("tbody", null, nics.length ? nics.map((n) => h("tr", null,
      h("td", { class: "mono" }, n.name), h("td", { class: "mono" }, n.mac), h("td", null, n.driver || ""),
      h("td", null, n.link ? (n.speed_mbps ? `up · ${n.speed_mbps >= 1000 ? `${n.speed_mbps / 1000} Gb/s` : `${n.speed_mbps} Mb/s`}` : "up") : "down")))
      : h("tr", null, h("td", { colspan: "4", class: "muted" }, "no NICs reported")))));
}

function renderTimeline() {
  const ol = $("#timeline");
  clear(ol);
  if (!state.events.length) { ol.append(h("li", { class: "muted" }, "No events yet.")); return; }
  for (const ev of [...state.events].reverse()) {
    let title;
    if (ev.kind === "status") title = ev.from ? `${LABEL[ev.from] || ev.from} → ${LABEL[ev.to] || ev.to}` : (LABEL[ev.to] || ev.to);
    else if (ev.kind === "stage") title = `Stage: ${ev.stage}`;
    else if (ev.kind === "error") title = "Agent error";
    else if (ev.kind === "power") title = / failed/.test(ev.message || "") ? "Power action failed" : "Power";
    else title = ev.kind;
    const multi = ev.message && ev.message.includes("\n");
    const li = h("li", { dataset: { status: ev.to || (ev.kind === "error" || title === "Power action failed" ? "failed" : "installing") } },
      h("time", { datetime: ev.at }, when(ev.at)), h("b", null, title),
      ev.message && !multi ? h("div", { class: "muted" }, ev.message) : null,
      multi ? h("pre", null, ev.message) : null);
    ol.append(li);
  }
}

// ---------- machines, regions, services ----------

function renderMachines() {
  const box = $("#machines");
  clear(box);
  const list = [...state.machines.values()].sort((a, b) => Date.parse(b.last_seen) - Date.parse(a.last_seen));
  setText($("#count-machines"), list.length);
  $("#machines-empty").hidden = list.length > 0;
  for (const m of list) {
    const hw = m.hardware || {};
    const c = hw.cpu || {}; const d = hw.dmi || {};
    box.append(h("article", { class: "card machine", dataset: { mac: m.mac } },
      h("h3", null, m.mac),
      h("dl", { class: "kv" },
        h("dt", null, "Region"), h("dd", null, m.region_id || "—"),
        h("dt", null, "System"), h("dd", null, [d.vendor, d.product].filter(Boolean).join(" ") || "—"),
        h("dt", null, "CPU"), h("dd", null, c.model ? `${c.model} (${c.threads || c.cores || "?"} threads)` : "—"),
        h("dt", null, "Memory"), h("dd", null, hw.memory ? bytes(hw.memory.total_bytes) : "—"),
        h("dt", null, "Disks"), h("dd", null, (hw.disks || []).map((x) => `${x.name} ${bytes(x.size_bytes)}`).join(", ") || "—"),
        h("dt", null, "Last seen"), h("dd", null, ago(Date.parse(m.last_seen)))),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "btn primary sm", onclick: () => openCreate({ target_mac: m.mac, region_id: m.region_id, hostname: dnsName(hw.hostname) }) }, "Create task from this machine"),
        h("button", { type: "button", class: "btn ghost sm", onclick: () => forgetMachine(m.mac) }, "Forget"))));
  }
}

function dnsName(s) { return s && /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/.test(s) ? s : ""; }

async function forgetMachine(mac) {
  try { await api("DELETE", `/api/v1/machines/${encodeURIComponent(mac)}`); } catch (e) { toast(e.message, true); }
}

function renderRegions() {
  const ul = $("#regions");
  clear(ul);
  const list = [...state.regions.values()].sort((a, b) => a.id.localeCompare(b.id));
  $("#regions-empty").hidden = list.length > 0;
  for (const r of list) {
    const reg = r.region || {};
    const services = Object.entries(reg.services || {}).map(([k, v]) => `${k}: ${v}`).join(" · ");
    ul.append(h("li", { dataset: { region: r.id } },
      h("div", null, h("b", null, r.id), " ", h("span", { class: "muted small" }, reg.api_url || ""),
        h("div", { class: "muted small" }, r.live ? `up since ${when(reg.started_at)}${reg.member ? ` · member ${reg.member}` : ""}` : `lease expired ${ago(r.since)}`),
        services ? h("div", { class: "small" }, services) : null),
      h("span", { class: "state", dataset: { state: r.live ? "live" : "offline" } }, r.live ? "live" : "offline")));
  }
  const sel = $("#filter-region");
  const cur = sel.value;
  const ids = new Set([...state.regions.keys()]);
  for (const t of state.tasks.values()) ids.add(t.spec.region_id);
  const sorted = [...ids].sort();
  if (sel.options.length - 1 !== sorted.length || sorted.some((id, i) => sel.options[i + 1].value !== id)) {
    sel.replaceChildren(h("option", { value: "" }, "All regions"), sorted.map((id) => h("option", { value: id }, id)));
    sel.value = cur;
  }
  const dl = $("#region-options");
  dl.replaceChildren(...list.map((r) => h("option", { value: r.id })));
}

async function pollHealth() {
  try {
    const res = await fetch("/api/v1/health", { credentials: "same-origin" });
    const rep = await res.json();
    $("#health-dot").dataset.state = rep.status === "ok" ? "ok" : "degraded";
    // An etcd alarm (NOSPACE: every write fails) is shown on every tab.
    setText($("#alarm-banner"), rep.alarm || "");
    $("#alarm-banner").hidden = !rep.alarm;
    setText($("#health-version"), rep.version ? `lpmos ${rep.version}` : "");
    const ul = $("#services");
    clear(ul);
    for (const s of rep.services || []) {
      ul.append(h("li", null,
        h("div", null, h("b", null, s.name), s.detail ? h("div", { class: "muted small" }, s.detail) : null,
          s.error ? h("div", { class: "error small" }, s.error) : null),
        h("span", { class: "state", dataset: { state: s.state } }, s.state)));
    }
  } catch {
    $("#health-dot").dataset.state = "down";
  }
}

// The etcd members of the cluster (GET /api/v1/cluster/members): role,
// leader, health and the regions each serves.
async function pollMembers() {
  let rep;
  try {
    rep = await api("GET", "/api/v1/cluster/members");
  } catch {
    $("#members-empty").hidden = false;
    clear($("#members"));
    setText($("#members-summary"), "");
    return;
  }
  const ul = $("#members");
  clear(ul);
  const members = rep.members || [];
  $("#members-empty").hidden = members.length > 0;
  setText($("#members-summary"), `${rep.voters} voter(s), tolerates ${rep.fault_tolerance} failure(s)`);
  for (const m of members) {
    const role = [m.learner ? "learner" : "voter", m.leader ? "leader" : "", m.self ? "this process" : ""].filter(Boolean).join(" · ");
    const regions = (m.regions || []).length ? `regions ${m.regions.join(", ")}` : "no region";
    ul.append(h("li", { dataset: { member: m.name || m.id } },
      h("div", null, h("b", null, m.name || `(joining) ${m.id}`), " ", h("span", { class: "muted small" }, role),
        h("div", { class: "muted small" }, `${regions} · ${(m.peer_urls || []).join(", ")}`),
        m.error ? h("div", { class: "error small" }, m.error) : null),
      h("span", { class: "state", dataset: { state: m.healthy ? "running" : "failed" } }, m.healthy ? "healthy" : "unhealthy")));
  }
}

// ---------- live updates ----------

function setConn(s, label) {
  const el = $("#conn");
  el.dataset.state = s;
  setText(el.querySelector(".label"), label);
}

function connect() {
  if (state.ws) return;
  setConn("connecting", state.attempt ? "reconnecting…" : "connecting…");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    onMessage(m);
  };
  ws.onclose = async (e) => {
    state.ws = null;
    if ($("#app-view").hidden) return;
    // A refused handshake may mean the session expired: check before retrying.
    if (e.code === 1006 || e.code === 1008) {
      const ok = await checkSession();
      if (!ok) return;
    }
    const delay = Math.min(15000, 500 * 2 ** state.attempt) * (0.5 + Math.random() / 2);
    state.attempt = Math.min(state.attempt + 1, 6);
    setConn("offline", `offline · retry in ${Math.ceil(delay / 1000)}s`);
    setTimeout(connect, delay);
  };
}

function onMessage(m) {
  switch (m.type) {
    case "snapshot": applySnapshot(m); return;
    case "task": {
      state.tasks.set(m.task_id, index(m.task));
      if (m.task_id === state.selected) loadDetail(m.task_id);
      scheduleRelayout();
      return;
    }
    case "task_deleted": {
      state.tasks.delete(m.task_id);
      if (m.task_id === state.selected) taskGone(m.task_id); // the open task was deleted (task rm)
      scheduleRelayout();
      return;
    }
    case "status": {
      const t = state.tasks.get(m.task_id);
      if (!t) return;
      t.status = { status: m.status, reason: m.reason, attempt: m.attempt, updated_at: m.updated_at };
      if (m.status === "pending") { t.progress = null; t.hardware = t.hardware || null; state.rates.delete(t.id); }
      index(t);
      refreshTask(t.id);
      // The partition table comes with the agent's last report (progress
      // messages do not carry it): the re-read brings it to the open detail.
      if (t.id === state.selected) loadDetail(t.id);
      scheduleRelayout();
      return;
    }
    case "progress": {
      const t = state.tasks.get(m.task_id);
      if (!t) return;
      const at = Date.parse(m.updated_at) || Date.now();
      trackRate(t.id, m, at);
      t.progress = { stage: m.stage, percentage: m.percentage, message: m.message, seq: m.seq,
        bytes_done: m.bytes_done, bytes_total: m.bytes_total, attempt: m.attempt, updated_at: m.updated_at };
      t._updated = Math.max(t._updated, at);
      refreshTask(t.id);
      if (state.sort === "updated" || state.sort === "progress") scheduleRelayout();
      return;
    }
    case "hardware": {
      const t = state.tasks.get(m.task_id);
      if (!t) return;
      t.hardware = m.hardware; // the summary: the detail reads the report
      index(t);
      refreshTask(t.id);
      if (t.id === state.selected) loadDetail(t.id);
      if (state.filter.q) scheduleRelayout();
      return;
    }
    case "target_disk": {
      const t = state.tasks.get(m.task_id);
      if (!t) return;
      t.target_disk = m.target_disk || null;
      refreshTask(t.id);
      if (t.id === state.selected) loadDetail(t.id);
      return;
    }
    case "power":
    case "bmc": {
      if (applyPowerMessage(state.tasks, m)) refreshTask(m.task_id);
      if (m.type === "bmc" && m.task_id === state.selected) loadDetail(m.task_id);
      return;
    }
    case "event": {
      if (m.task_id === state.selected) { state.events.push(m.event); renderTimeline(); }
      return;
    }
    case "machine": state.machines.set(m.mac, m.machine); renderMachines(); return;
    case "machine_deleted": state.machines.delete(m.mac); renderMachines(); return;
    case "region": state.regions.set(m.region_id, { id: m.region_id, region: m.region, live: true }); renderRegions(); return;
    case "region_deleted": {
      const r = state.regions.get(m.region_id);
      if (r) { r.live = false; r.since = Date.now(); }
      renderRegions();
      return;
    }
    default:
  }
}

function applySnapshot(m) {
  state.attempt = 0;
  state.revision = m.revision;
  state.tasks = new Map((m.tasks || []).map((t) => [t.id, index(t)]));
  state.machines = new Map((m.machines || []).map((x) => [x.mac, x]));
  const lost = [...state.regions.values()];
  const regions = new Map((m.regions || []).map((r) => [r.id, { id: r.id, region: r, live: true }]));
  for (const r of lost) if (!regions.has(r.id)) regions.set(r.id, { ...r, live: false, since: r.since || Date.now() });
  state.regions = regions;
  // Every visible row is rebuilt from the new state.
  for (const el of state.rows.values()) { el.remove(); state.pool.push(el); }
  state.rows.clear();
  relayout();
  renderMachines();
  renderRegions();
  if (state.selected) {
    if (state.tasks.has(state.selected)) { renderDetail(); select(state.selected, { push: false, focus: false }); } else taskGone(state.selected);
  }
  applyRoute(); // a deep link (#/tasks/{id}) opens once the tasks are known
  document.body.dataset.revision = String(m.revision);
  setConn("live", "live");
  // The server resent the whole state (this page fell behind, or etcd's
  // history was compacted): say so, the rows were rebuilt.
  if (m.resync) {
    setConn("live", "live · resynced");
    toast("Live view resynced from a fresh snapshot");
  }
}

// ---------- API ----------

async function api(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) {
    const data = await res.json().catch(() => ({}));
    showLogin(data.session_ended ? data.error : "");
    throw new Error(data.error || "session expired: sign in again");
  }
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* empty body */ }
  if (!res.ok) throw new Error((data && data.error) || `${res.status} ${res.statusText}`);
  return data;
}

async function act(btn, method, path, done) {
  btn.disabled = true;
  try { await api(method, path); if (done) toast(done); } catch (e) { toast(e.message, true); } finally { btn.disabled = false; }
}

// ---------- create dialog ----------

async function openCreate(prefill = {}) {
  const dlg = $("#create-dialog");
  const form = $("#create-form");
  form.reset();
  setText($("#create-error"), "");
  for (const [k, v] of Object.entries(prefill)) if (v && form.elements[k]) form.elements[k].value = v;
  if (!form.elements.region_id.value && state.regions.size === 1) form.elements.region_id.value = [...state.regions.keys()][0];
  dlg.showModal();
  (prefill.target_mac ? form.elements.os_type : form.elements.target_mac).focus();
  try {
    const imgs = await api("GET", "/api/v1/images");
    $("#os-options").replaceChildren(...[...new Set(imgs.map((i) => i.os_type))].map((o) => h("option", { value: o })));
    $("#version-options").replaceChildren(...imgs.map((i) => h("option", { value: i.os_version }, i.os_type)));
  } catch { /* the catalog is a convenience */ }
}

async function submitCreate(e) {
  e.preventDefault();
  const f = $("#create-form").elements;
  const body = {
    target_mac: f.target_mac.value.trim(), region_id: f.region_id.value.trim(),
    os_type: f.os_type.value.trim(), os_version: f.os_version.value.trim(),
  };
  if (f.hostname.value.trim()) body.hostname = f.hostname.value.trim();
  if (f.allow_missing_image.checked) body.allow_missing_image = true;
  const keys = f.ssh_keys.value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (keys.length) body.ssh_authorized_keys = keys;
  try {
    const hints = parseHints(f.root_device.value);
    if (hints) body.root_device_hints = hints;
  } catch (err) { setText($("#create-error"), err.message); return; }
  const btn = $("#create-submit");
  btn.disabled = true;
  try {
    const t = await api("POST", "/api/v1/tasks", body);
    $("#create-dialog").close();
    toast(`Task created for ${t.spec.target_mac}`);
    showTab("tasks");
    select(t.id);
  } catch (err) {
    setText($("#create-error"), err.message);
  } finally { btn.disabled = false; }
}

// ---------- session, tabs, wiring ----------

async function checkSession() {
  try {
    const res = await fetch("/api/v1/session", { credentials: "same-origin" });
    if (!res.ok) {
      // An ended session says why (expired, token rotated or removed).
      const data = await res.json().catch(() => ({}));
      showLogin(data.session_ended ? data.error : "");
      return false;
    }
    state.csrf = (await res.json()).csrf_token;
    return true;
  } catch { return true; } // server unreachable: keep retrying
}

function showLogin(why) {
  if (state.ws) { const ws = state.ws; state.ws = null; ws.onclose = null; ws.close(); }
  setConn("offline", "signed out");
  $("#app-view").hidden = true;
  $("#tabs").hidden = true;
  $("#logout").hidden = true;
  $("#login-view").hidden = false;
  if (why !== undefined) setText($("#login-error"), why);
  $("#token").focus();
}

function showApp() {
  $("#login-view").hidden = true;
  $("#app-view").hidden = false;
  $("#tabs").hidden = false;
  $("#logout").hidden = false;
  connect();
  pollHealth();
}

function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) {
    if (b.dataset.tab === name) b.setAttribute("aria-current", "page"); else b.removeAttribute("aria-current");
  }
  for (const p of document.querySelectorAll(".tabpanel")) p.hidden = p.id !== `tab-${name}`;
  if (name === "tasks") renderRows(true);
  if (name === "infra") { pollHealth(); pollMembers(); }
}

function initTheme() {
  const saved = localStorage.getItem("lpmos-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  $("#theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : !matchMedia("(prefers-color-scheme: light)").matches;
    const next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("lpmos-theme", next);
  });
}

function wire() {
  initTheme();
  const fs = $("#filter-status");
  for (const s of STATUSES) fs.append(h("option", { value: s }, LABEL[s]));
  fs.addEventListener("change", () => setStatusFilter(fs.value));
  $("#filter-region").addEventListener("change", (e) => { state.filter.region = e.target.value; relayout(); });
  $("#sort").addEventListener("change", (e) => { state.sort = e.target.value; relayout(); });
  let debounce;
  $("#search").addEventListener("input", (e) => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.filter.q = e.target.value.trim(); relayout(); }, 80);
  });
  let scrollQueued = false;
  $("#task-scroll").addEventListener("scroll", () => {
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => { scrollQueued = false; renderRows(true); });
  }, { passive: true });
  new ResizeObserver(() => renderRows(true)).observe($("#task-scroll"));
  $("#d-close").addEventListener("click", () => closeDetail());
  window.addEventListener("popstate", applyRoute);
  window.addEventListener("hashchange", applyRoute);
  $("#approve").addEventListener("click", (e) => approveSelected(e.currentTarget));
  $("#retry").addEventListener("click", (e) => act(e.currentTarget, "POST", `/api/v1/tasks/${encodeURIComponent(state.selected)}/retry`, "Task queued again"));
  $("#cancel").addEventListener("click", (e) => {
    if (confirm("Cancel this task? The machine will not be provisioned.")) act(e.currentTarget, "DELETE", `/api/v1/tasks/${encodeURIComponent(state.selected)}`, "Task cancelled");
  });
  wirePower(() => state.selected, api, toast);
  $("#new-task").addEventListener("click", () => openCreate());
  $("#select-all").addEventListener("change", (e) => selectAllShown(e.target.checked));
  for (const kind of Object.keys(BULK)) $(`#bulk-${kind}`).addEventListener("click", (e) => bulkAct(kind, e.currentTarget));
  $("#bulk-clear").addEventListener("click", () => { state.checked.clear(); paintBulk(); });
  $("#create-form").addEventListener("submit", submitCreate);
  $("#create-cancel").addEventListener("click", () => $("#create-dialog").close());
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement.tagName !== "INPUT" && document.activeElement.tagName !== "TEXTAREA") { e.preventDefault(); $("#search").focus(); }
    if (e.key === "Escape" && state.selected && !$("#create-dialog").open) closeDetail();
  });
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    setText($("#login-error"), "");
    const btn = $("#login-submit");
    btn.disabled = true;
    try {
      const res = await fetch("/api/v1/session", { method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("#token").value.trim() }) });
      const data = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(data.error || `${res.status} ${res.statusText}`);
      state.csrf = data.csrf_token;
      $("#token").value = "";
      showApp();
    } catch (err) {
      setText($("#login-error"), err.message);
    } finally { btn.disabled = false; }
  });
  $("#logout").addEventListener("click", async () => {
    try { await api("DELETE", "/api/v1/session"); } catch { /* signed out anyway */ }
    state.csrf = "";
    showLogin();
  });
  setInterval(() => {
    const now = Date.now();
    for (const [id, row] of state.rows) { const t = state.tasks.get(id); if (t) setText(row.querySelector(".upd"), ago(t._updated, now)); }
  }, 10000);
  setInterval(() => { if (!$("#app-view").hidden) { pollHealth(); pollMembers(); } }, 10000);
}

wire();
checkSession().then((ok) => { if (ok && state.csrf) showApp(); else if (ok) showLogin(); });
