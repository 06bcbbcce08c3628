// Live leaderboard: one EventSource per selected event; `board` replaces, `delta` merges, `reset`
// waits for the next `board`, `hub` tells whether the daemon's hub connection is up. No framework.
"use strict";

const FLAGS = ["Unknown", "Green", "Yellow", "Red", "White", "Checkered", "Black", "Purple 35",
  "Purple 60", "Blue", "Meatball", "Debris", "Waving yellow"];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  eventId: params.get("event"),
  session: {},
  cars: new Map(),        // number -> row (CarPosition short names)
  flashUntil: new Map(),  // number -> ms timestamp
  streamUp: false,
  hub: "connecting",
  source: null,
  queued: false,
};

function text(el, value) { if (el.textContent !== value) el.textContent = value; }
function lapTime(t) { return t ? String(t).replace(/^00:/, "").replace(/^0(\d:)/, "$1") : ""; }
function color(c) {  // RedMist class colours are #AARRGGBB
  if (typeof c !== "string") return null;
  return c.length === 9 ? "#" + c.slice(3) : c;
}

function banner() {
  const b = $("banner");
  if (!state.streamUp) {
    b.className = "banner"; b.textContent = "Connection to the daemon lost — reconnecting…"; b.hidden = false;
  } else if (state.hub !== "connected") {
    b.className = "banner hub";
    b.textContent = `The daemon's hub connection is ${state.hub} — the board may be stale`;
    b.hidden = false;
  } else {
    b.hidden = true;
  }
}

function schedule() {
  if (state.queued) return;
  state.queued = true;
  requestAnimationFrame(() => { state.queued = false; render(); });
}

function entries() {
  const out = new Map();
  for (const e of state.session.eventEntries || []) out.set(String(e.no), e);
  return out;
}

function sortMode() {
  const v = $("sort").value;
  if (v !== "auto") return v;
  return state.session.isPracticeQualifying ? "fastest" : "position";
}

function render() {
  const s = state.session;
  text($("session"), [s.eventName, s.sessionName].filter(Boolean).join(" · ") || "—");
  const flag = $("flag");
  const f = s.currentFlag ?? "";
  if (flag.dataset.flag !== String(f)) flag.dataset.flag = String(f);
  text(flag, FLAGS[f] || "—");
  const ttg = s.timeToGo && s.timeToGo !== "00:00:00" ? s.timeToGo : "—";
  text($("ttg"), ttg);
  text($("race"), s.runningRaceTime || "—");
  let laps = 0;
  for (const r of state.cars.values()) laps = Math.max(laps, r.llp || 0);
  text($("laps"), laps ? String(laps) : "—");

  const names = entries();
  const grouped = $("grouped").checked;
  const mode = sortMode();
  const q = $("search").value.trim().toLowerCase();
  let rows = [...state.cars.values()].filter((r) => r.n != null);
  if (q) {
    rows = rows.filter((r) => {
      const e = names.get(String(r.n));
      return String(r.n).toLowerCase().includes(q) || (e && (e.nm || "").toLowerCase().includes(q))
        || (r.dn || "").toLowerCase().includes(q);
    });
  }
  const posKey = (r) => { const p = grouped ? r.clp : r.ovp; return p > 0 ? p : 1e9; };
  const bestKey = (r) => (r.bt ? r.bt : "~");
  rows.sort((a, b) => mode === "fastest"
    ? (bestKey(a) < bestKey(b) ? -1 : bestKey(a) > bestKey(b) ? 1 : posKey(a) - posKey(b))
    : posKey(a) - posKey(b));
  const order = s.classOrder || {};
  const classes = grouped
    ? [...new Set(rows.map((r) => r.class || ""))].sort((a, b) =>
      (Number(order[a] ?? 1e9) - Number(order[b] ?? 1e9)) || a.localeCompare(b))
    : [null];
  const body = document.createDocumentFragment();
  const now = performance.now();
  for (const cls of classes) {
    const list = cls === null ? rows : rows.filter((r) => (r.class || "") === cls);
    if (cls !== null) {
      const tr = document.createElement("tr");
      tr.className = "group";
      const td = document.createElement("td"); td.colSpan = 10; td.textContent = cls || "(no class)";
      tr.append(td); body.append(tr);
    }
    list.forEach((r, i) => body.append(row(r, i + 1, grouped, mode, names, now)));
  }
  $("rows").replaceChildren(body);
  $("empty").hidden = state.cars.size > 0;
}

function cell(tr, cls, content) {
  const td = document.createElement("td");
  td.className = cls;
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  tr.append(td);
  return td;
}

function span(cls, content) { const e = document.createElement("span"); e.className = cls; e.textContent = content; return e; }

function row(r, rank, grouped, mode, names, now) {
  const tr = document.createElement("tr");
  tr.dataset.car = String(r.n);
  if (r.st) tr.classList.add("stale");
  if ((state.flashUntil.get(String(r.n)) || 0) > now) tr.classList.add("flash");
  const pos = mode === "fastest" ? rank : (grouped ? r.clp : r.ovp);
  cell(tr, "c-pos", pos > 0 ? String(pos) : "");
  const gained = grouped ? r.cpg : r.opg;
  const g = cell(tr, "c-gain gain", "");
  if (typeof gained === "number" && gained !== -999 && gained !== 0) {
    g.textContent = (gained > 0 ? "▲" : "▼") + Math.abs(gained);
    g.classList.add(gained > 0 ? "up" : "down");
  }
  const car = document.createElement("span");
  car.append(span("num", "#" + r.n));
  const e = names.get(String(r.n));
  if (e && e.nm) car.append(span("name", e.nm));
  cell(tr, "c-car", car);
  const badge = span("badge", r.class || "");
  const c = color((state.session.classColors || {})[r.class]);
  if (c) badge.style.setProperty("background", c);
  cell(tr, "c-class", r.class ? badge : "");
  cell(tr, "c-driver", r.dn || "");
  const last = cell(tr, "c-last", r.llp ? `L${r.llp} ${lapTime(r.ltm)}` : "");
  if (r.bl && r.bl === r.llp) last.classList.add("pb");
  const fast = mode === "fastest";
  cell(tr, "c-gap", (grouped ? (fast ? r.cgft : r.cg) : (fast ? r.ogft : r.og)) || "");
  cell(tr, "c-diff", (grouped ? (fast ? r.cdft : r.cd) : (fast ? r.odft : r.od)) || "");
  const best = cell(tr, "c-best", r.bt ? `${lapTime(r.bt)}${r.bl ? " (L" + r.bl + ")" : ""}` : "");
  if (grouped ? r.btc : r.ibt) best.classList.add("ob");
  const pit = r.enp ? "ENTERED PIT" : r.psf ? "PIT S/F" : r.exp ? "EXITED PIT" : r.ip ? "PIT" : "";
  cell(tr, "c-pit", pit ? span("badge pit", pit) : "");
  return tr;
}

function lapChanged(number, before, after) {
  if (before !== undefined && after !== undefined && before !== after) {
    state.flashUntil.set(number, performance.now() + 900);
    setTimeout(schedule, 950);
  }
}

function onBoard(data) {
  state.session = data.session || {};
  state.cars = new Map(Object.entries(data.cars || {}));
  schedule();
}

function onDelta(data) {
  if (data.session) Object.assign(state.session, data.session);
  for (const [n, fields] of Object.entries(data.cars || {})) {
    const row = state.cars.get(n);
    if (row) { lapChanged(n, row.llp, fields.llp); Object.assign(row, fields); } else state.cars.set(n, fields);
  }
  for (const n of data.removed || []) state.cars.delete(n);
  schedule();
}

function connect() {
  if (state.source) state.source.close();
  if (!state.eventId) return;
  const es = new EventSource(`/v1/events/${encodeURIComponent(state.eventId)}/stream`);
  state.source = es;
  es.onopen = () => { state.streamUp = true; banner(); };
  es.onerror = () => {
    state.streamUp = false; banner();
    // A refused or non-200 answer closes the EventSource for good: start a new one shortly.
    if (es.readyState === EventSource.CLOSED) setTimeout(() => { if (state.source === es) connect(); }, 1500);
  };
  es.addEventListener("board", (m) => onBoard(JSON.parse(m.data)));
  es.addEventListener("delta", (m) => onDelta(JSON.parse(m.data)));
  es.addEventListener("reset", () => { state.cars = new Map(); schedule(); });
  es.addEventListener("hub", (m) => { state.hub = JSON.parse(m.data).state; state.streamUp = true; banner(); });
}

async function loadEvents() {
  const select = $("event");
  try {
    const r = await fetch("/v1/events");
    const data = await r.json();
    select.replaceChildren(...data.events.map((e) => {
      const o = document.createElement("option");
      o.value = String(e.id);
      o.textContent = `${e.event_name || "Event"} (${e.id})`;
      return o;
    }));
    if (!state.eventId && data.events.length) state.eventId = String(data.events[0].id);
    select.value = state.eventId || "";
  } catch (err) {
    setTimeout(loadEvents, 2000);
  }
}

async function main() {
  for (const id of ["grouped", "sort"]) $(id).addEventListener("change", schedule);
  $("search").addEventListener("input", schedule);
  $("event").addEventListener("change", (ev) => {
    state.eventId = ev.target.value;
    const url = new URL(location.href); url.searchParams.set("event", state.eventId);
    history.replaceState(null, "", url);
    state.session = {}; state.cars = new Map(); schedule(); connect();
  });
  await loadEvents();
  connect();
}

main();
