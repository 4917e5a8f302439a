// edgefleet dashboard: plain JS, no build step, nothing fetched but this controller's API.
// Device-supplied text (ids, labels, reasons) only ever goes in through textContent.
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];
const SVG = "http://www.w3.org/2000/svg";

// --- the API token: kept in sessionStorage (this tab only, gone when it closes) -----------
// A controller with auth on (the default) answers every read only to a token. It comes from
// the sign-in field, or once from a link ending #token=eft_... (then wiped from the address).

const TOKEN_KEY = "edgefleet-token";
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function takeTokenFromLink() {
  const m = location.hash.match(/[#&]token=([^&]*)/);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  const rest = location.hash.replace(/[#&]token=[^&]*/, "").replace(/^&/, "");
  history.replaceState(null, "", location.pathname + (rest ? `#${rest.replace(/^#/, "")}` : ""));
}

function showLogin(message) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-note").textContent = message;
}

function setupLogin() {
  const form = document.getElementById("login");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, form.elements.token.value.trim());
    form.elements.token.value = "";
    form.hidden = true;
    route();
  });
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("signed out");
  });
}

async function authFetch(path, accept) {
  const headers = { Accept: accept };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const r = await fetch(path, { headers });
  if (r.status === 401) {
    showLogin(token() ? "that token was refused: sign in again" : "this controller needs an API token");
    throw new Error(`${path}: sign in (HTTP 401)`);
  }
  return r;
}

async function api(path) {
  const r = await authFetch(path, "application/json");
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function fillTable(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(...rows);
}

const when = (t) => (t ? new Date(t).toLocaleString() : "-");
// "13:00 UTC" today, "11-24 13:00 UTC" another day: as the CLI and the fleet table write it.
const hhmm = (t) => {
  const at = new Date(t).toISOString();
  const day = at.slice(0, 10) === new Date().toISOString().slice(0, 10) ? "" : `${at.slice(5, 10)} `;
  return `${day}${at.slice(11, 16)} UTC`;
};
const num = (v, d = 3) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));

// --- fleet -------------------------------------------------------------------------------

async function renderFleet() {
  const { data } = await api("/v1/devices");
  const online = data.filter((d) => d.online).length;
  const versions = {};
  for (const d of data) {
    const key = d.model ? `${d.model}:${d.version}` : "none";
    versions[key] = (versions[key] || 0) + 1;
  }
  const cards = [
    el("div", { class: "card" }, el("b", {}, data.length), "devices"),
    el("div", { class: "card" }, el("b", { class: "ok" }, online), "online"),
    el("div", { class: "card" }, el("b", { class: "bad" }, data.length - online), "offline"),
    ...Object.entries(versions).map(([v, n]) => el("div", { class: "card" }, el("b", {}, n), v)),
  ];
  document.getElementById("fleet-summary").replaceChildren(...cards);
  fillTable("fleet-table", data.map((d) => el("tr", {},
    el("td", {}, d.device_id),
    el("td", { class: d.online ? "ok" : "bad" }, d.online ? "yes" : "no"),
    el("td", {}, d.model ? `${d.model}:${d.version}` : "-"),
    el("td", {}, d.release ?? "-"),
    el("td", {}, d.phase || "-"),
    el("td", {}, d.since ? when(d.since) : "-"),
    el("td", {}, d.desired_model ? `${d.desired_model}:${d.desired_version}` : "-"),
    el("td", {}, d.desired_by || "-"),
    el("td", { class: d.waiting ? "bad" : "", "data-waiting": d.waiting || "" }, d.waiting || "-"),
    el("td", {}, d.error || "-"),
    el("td", {}, Object.entries(d.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-"),
    el("td", {}, when(d.last_seen)),
  )));
  return data.length;
}

// --- rollouts ------------------------------------------------------------------------------

async function renderRollouts(selected) {
  const { data } = await api("/v1/rollouts");
  fillTable("rollout-table", data.map((r) => el("tr", {
    class: "link", "data-rollout": r.id, onclick: () => { location.hash = `#rollout=${r.id}`; },
  },
    el("td", {}, r.id), el("td", {}, `${r.model}:${r.version}`), el("td", {}, r.state),
    el("td", {}, `${r.stage_number} / ${r.stages.length || 1}`), el("td", {}, `${r.done}/${r.total}`),
    el("td", {}, when(r.created_at)),
  )));
  const detail = document.getElementById("rollout-detail");
  if (selected === undefined) {
    detail.replaceChildren();
    return data.length;
  }
  const r = await api(`/v1/rollouts/${encodeURIComponent(selected)}`);
  const stages = r.stages.map((s) => el("div", { class: `stage ${s.outcome}`, "data-stage": s.number },
    el("h4", {}, `stage ${s.number}: ${s.stage} (${s.devices} devices) - ${s.outcome}`,
      s.number === r.stage_number && r.state === "running" ? " - current" : ""),
    el("div", {}, `started ${when(s.started_at)}, ended ${when(s.ended_at)}`),
    gateTable(s.gates),
  ));
  detail.replaceChildren(
    el("h3", {}, `rollout ${r.id}: ${r.model}:${r.version} - ${r.state}`),
    el("p", {}, r.reason || ""),
    // What `rollout status` says: a closed maintenance window, and devices a pin holds.
    el("p", { class: "waiting", "data-window": r.waiting_for_window || "" },
      r.waiting_for_window ? `waiting for window (opens ${hhmm(r.waiting_for_window)})` : ""),
    ...stages,
    el("h4", {}, "devices"),
    el("table", {}, el("tbody", {}, ...r.devices.map((d) => el("tr", {},
      el("td", {}, d.device_id), el("td", {}, `stage ${d.stage_number}`), el("td", {}, d.phase || "-"),
      el("td", {}, d.version || "-"), el("td", { class: d.failed ? "bad" : d.done ? "ok" : "" },
        d.refused ? `refused: ${d.refused}` : d.failed ? "failed" : d.done ? "done" : "pending"))))),
    el("table", {}, el("tbody", {}, ...(r.skipped || []).map((d) => el("tr", { "data-skipped": d.device_id },
      el("td", {}, d.device_id), el("td", {}, `skipped: ${d.reason}`))))),
  );
  detail.dataset.rollout = String(r.id);
  return r.stages.length;
}

function gateTable(gates) {
  if (!gates.length) return el("div", {}, "no gates evaluated yet");
  return el("table", { class: "gates" }, el("tbody", {},
    el("tr", {}, ...["gate", "verdict", "value", "threshold", "samples"].map((h) => el("th", {}, h))),
    ...gates.map((g) => el("tr", { "data-gate": g.metric },
      el("td", {}, g.metric),
      el("td", { class: g.verdict === "pass" ? "ok" : g.verdict === "fail" ? "bad" : "warn" },
        g.verdict),
      el("td", {}, num(g.value)), el("td", {}, num(g.threshold)), el("td", {}, g.samples ?? "-"),
    ))));
}

// --- drift ---------------------------------------------------------------------------------

async function renderDrift() {
  const since = new Date(Date.now() - 6 * 3600 * 1000).toISOString();
  const q = (g) => `/v1/drift?group_by=${g}&bucket_s=60&since=${encodeURIComponent(since)}`;
  const [byVersion, bySite] = await Promise.all([api(q("model_version")), api(q("site"))]);
  const a = lineChart(document.getElementById("chart-version"), byVersion.data);
  const b = lineChart(document.getElementById("chart-site"), bySite.data);
  return a + b;
}

function lineChart(box, points, metric = "psi") {
  const W = 820, H = 230, L = 50, R = 10, T = 10, B = 30;
  const series = {};
  for (const p of points) {
    if (p[metric] === null) continue;
    (series[p.group] = series[p.group] || []).push([Date.parse(p.t), p[metric]]);
  }
  const all = Object.values(series).flat();
  const chart = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img" });
  chart.append(svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fafbfc",
    stroke: "#d0d4dc" }));
  if (!all.length) {
    const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#667" });
    t.textContent = "no windows with a model card yet";
    chart.append(t);
    box.replaceChildren(chart);
    box.dataset.points = "0";
    return 0;
  }
  const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]), x0 + 60000);
  const y1 = Math.max(0.3, ...all.map((p) => p[1])) * 1.1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - (y / y1) * (H - T - B);
  for (const v of [0, y1 / 2, y1]) {
    const t = svg("text", { x: L - 5, y: sy(v) + 4, "text-anchor": "end", "font-size": 11 });
    t.textContent = v.toFixed(2);
    chart.append(t, svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), stroke: "#e3e5ea" }));
  }
  const threshold = svg("line", { x1: L, x2: W - R, y1: sy(0.25), y2: sy(0.25), stroke: "#c0272d",
    "stroke-dasharray": "4 3" });
  chart.append(threshold);
  for (const [t, anchor] of [[x0, "start"], [x1, "end"]]) {
    const label = svg("text", { x: sx(t), y: H - 10, "text-anchor": anchor, "font-size": 11 });
    label.textContent = new Date(t).toLocaleTimeString();
    chart.append(label);
  }
  const legend = el("div", { class: "legend" });
  Object.entries(series).forEach(([group, pts], i) => {
    const color = COLORS[i % COLORS.length];
    pts.sort((p, q) => p[0] - q[0]);
    chart.append(svg("polyline", { class: "series", "data-group": group, fill: "none",
      stroke: color, "stroke-width": 2, points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" ") }));
    for (const p of pts) chart.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: color }));
    const key = el("span", {}, "\u25cf ", group);
    key.style.color = color;
    legend.append(key);
  });
  box.replaceChildren(chart, legend);
  box.dataset.points = String(all.length);
  return all.length;
}

// --- samples -------------------------------------------------------------------------------

async function renderSamples() {
  const { data } = await api("/v1/samples?limit=24");
  const figures = data.map((s) => {
    const canvas = el("canvas", { width: 320, height: 240, "data-sample": s.id });
    drawSample(canvas, s);
    return el("figure", {}, canvas, el("figcaption", {},
      `#${s.id} ${s.device_id} ${s.model || "-"}:${s.version || "-"} - ${s.strategy}: ${s.reason}`));
  });
  document.getElementById("gallery").replaceChildren(...figures);
  if (!data.length) document.getElementById("gallery").append(el("p", {}, "no samples yet"));
  return data.length;
}

async function drawSample(canvas, s) {
  // Frames need an operator token: fetched with it, then drawn from a local blob URL.
  const r = await authFetch(`/v1/samples/${s.id}/image`, "image/jpeg").catch(() => null);
  if (!r || !r.ok) {
    canvas.dataset.withheld = r ? String(r.status) : "error";
    canvas.getContext("2d").fillText(r && r.status === 403 ? "frame: operators only" : "no frame",
      10, 20);
    return;
  }
  const url = URL.createObjectURL(await r.blob());
  const img = new Image();
  img.onload = () => {
    const scale = Math.min(320 / img.width, 240 / img.height, 1);
    canvas.width = Math.round(img.width * scale);
    canvas.height = Math.round(img.height * scale);
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    ctx.lineWidth = 2;
    ctx.font = "11px sans-serif";
    const box = (d, color, dashed) => {
      const [x1, y1, x2, y2] = d.box_xyxy.map((v) => v * scale);
      ctx.setLineDash(dashed ? [4, 3] : []);
      ctx.strokeStyle = color;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      ctx.fillStyle = color;
      ctx.fillText(`${d.class_name} ${d.confidence.toFixed(2)}`, x1 + 2, Math.max(10, y1 - 2));
    };
    s.detections.forEach((d) => box(d, "#16a34a", false));
    s.candidates.forEach((d) => box(d, "#ea580c", true));
    canvas.dataset.boxes = String(s.detections.length + s.candidates.length);
    URL.revokeObjectURL(url);
  };
  img.src = url;
}

// --- alerts --------------------------------------------------------------------------------

async function renderAlerts() {
  const { data } = await api("/v1/alerts");
  fillTable("alert-table", data.map((a) => el("tr", {},
    el("td", {}, a.id), el("td", { class: a.state === "firing" ? "bad" : "ok" }, a.state),
    el("td", {}, a.scope), el("td", {}, `${a.model}:${a.version}`), el("td", {}, a.metric),
    el("td", {}, num(a.value)), el("td", {}, when(a.fired_at)), el("td", {}, when(a.resolved_at)),
  )));
  return data.length;
}

// --- routing -------------------------------------------------------------------------------

const PAGES = { fleet: renderFleet, rollouts: renderRollouts, drift: renderDrift,
  samples: renderSamples, alerts: renderAlerts };

async function route() {
  const hash = location.hash.replace(/^#/, "") || "fleet";
  const [name, arg] = hash.split("=");
  const page = name === "rollout" ? "rollouts" : (PAGES[name] ? name : "fleet");
  for (const section of document.querySelectorAll(".page")) {
    section.classList.toggle("shown", section.id === page);
  }
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.getAttribute("href") === `#${page}`);
  }
  const section = document.getElementById(page);
  try {
    const count = await (name === "rollout" ? renderRollouts(arg) : PAGES[page]());
    section.dataset.ready = "1";
    section.dataset.count = String(count);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    section.dataset.error = String(e.message || e);
    document.getElementById("updated").textContent = `error: ${e.message || e}`;
  }
}

takeTokenFromLink();
setupLogin();
window.addEventListener("hashchange", route);
route();
setInterval(route, 10000);
