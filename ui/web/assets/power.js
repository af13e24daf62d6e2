// Power control (issue 13): a task's BMC power state in the list and the
// detail, and buttons that ask the region owning the task to act. The
// region performs the action; its result arrives as a task event on /ws.
import { $, h, setText } from "./dom.js";

// powerText says what the dashboard knows of a machine's power.
export function powerText(t) {
  if (!t.bmc) return "";
  const p = t.power;
  if (!p) return "power: not polled yet";
  if (p.error) return "BMC not answering";
  return p.state === "on" ? "powered on" : p.state === "off" ? "powered off" : "power unknown";
}

function powerState(t) {
  const p = t.power;
  if (!p) return "unknown";
  return p.error ? "error" : p.state;
}

// paintPowerCell shows a small power badge in a task row's status cell.
export function paintPowerCell(row, t) {
  let el = row.querySelector(".pw");
  if (!t.bmc) { if (el) el.remove(); return; }
  if (!el) {
    el = h("span", { class: "pw", role: "img" });
    (row.querySelector(".stcell") || row.firstElementChild).append(el);
  }
  el.dataset.power = powerState(t);
  const text = powerText(t);
  el.setAttribute("aria-label", text);
  el.title = t.power && t.power.error ? `${text}: ${t.power.error}` : text;
}

// renderPower fills the detail's power block.
export function renderPower(t) {
  const box = $("#d-power");
  if (!box) return;
  box.hidden = !t.bmc;
  if (!t.bmc) return;
  const badge = $("#d-power-badge");
  badge.dataset.power = powerState(t);
  setText(badge, powerText(t));
  const b = t.bmc;
  setText($("#d-power-bmc"), `${b.protocol} ${b.address}${b.system_id ? " system " + b.system_id : ""}, user ${b.username}` +
    (t.power && t.power.checked_at ? ` · checked ${new Date(t.power.checked_at).toLocaleTimeString()}` : ""));
  setText($("#d-power-error"), t.power && t.power.error ? t.power.error : "");
  // A stalled install is the case for a power cycle: make it the obvious one.
  const cycle = box.querySelector('[data-power-action="cycle"]');
  if (cycle) cycle.classList.toggle("primary", t.status.status === "stalled");
}

// applyPowerMessage folds a /ws "power" or "bmc" message into the task;
// it reports whether it did.
export function applyPowerMessage(tasks, m) {
  const t = tasks.get(m.task_id);
  if (!t) return false;
  if (m.type === "power") t.power = m.power || null;
  else if (m.type === "bmc") t.bmc = m.bmc || null;
  else return false;
  return true;
}

const DONE = { on: "Power on requested", off: "Power off requested", cycle: "Power cycle requested", pxe: "Next boot from PXE requested" };
const CONFIRM = { off: "Power this machine off (hard, no OS shutdown)?", cycle: "Power-cycle this machine (hard reset)?" };

// wirePower connects the buttons; api and toast are the dashboard's.
export function wirePower(selected, api, toast) {
  for (const btn of document.querySelectorAll("[data-power-action]")) {
    btn.addEventListener("click", async () => {
      const action = btn.dataset.powerAction;
      const id = selected();
      if (!id || (CONFIRM[action] && !confirm(CONFIRM[action]))) return;
      btn.disabled = true;
      try {
        const r = await api("POST", `/api/v1/tasks/${encodeURIComponent(id)}/power`, { action });
        toast(`${DONE[action]}: region ${r.region_id} performs it (see the timeline)`);
      } catch (e) { toast(e.message, true); } finally { btn.disabled = false; }
    });
  }
}
