// Orchestry's dashboard: live fragments by short polling, the apps filter, relative times, and the charts
// (inline SVG drawn here). No framework, no build step; the Content-Security-Policy allows this file only.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const statusEl = () => document.querySelector("[data-live-status]");

  // -- relative times ("3 min ago", the absolute time on hover) --------------------------------------------
  function duration(s) {
    s = Math.max(0, s);
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 60) return Math.round(s) + " s";
    const w = Math.floor(s);
    const units = [[86400, "d", 3600, "h"], [3600, "h", 60, "min"], [60, "min", 1, "s"]];
    for (const [size, unit, sub, subUnit] of units) {
      if (w >= size) {
        const rest = Math.floor((w % size) / sub);
        return Math.floor(w / size) + " " + unit + (rest ? " " + rest + " " + subUnit : "");
      }
    }
    return w + " s";
  }
  function ago(ms) {
    const d = (Date.now() - ms) / 1000;
    if (Math.abs(d) < 1) return "just now";
    return d > 0 ? duration(d) + " ago" : "in " + duration(-d);
  }
  function refreshTimes(root) {
    for (const t of (root || document).querySelectorAll("time[data-rel]")) {
      const ms = Date.parse(t.getAttribute("datetime"));
      if (!isNaN(ms)) {
        t.textContent = ago(ms);
        if (!t.title) t.title = new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
      }
    }
  }

  // -- the filter box of the apps table ----------------------------------------------------------------------
  function applyFilter(input) {
    const table = document.getElementById(input.dataset.filter);
    if (!table) return;
    const words = input.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0, rows = 0;
    for (const row of table.tBodies[0].rows) {
      const key = (row.dataset.key || "").toLowerCase();
      if (!row.dataset.key) continue;
      rows++;
      const hit = words.every((w) => key.includes(w));
      row.hidden = !hit;
      if (hit) shown++;
    }
    const empty = document.getElementById("filter-empty");
    if (empty) empty.hidden = !(rows > 0 && shown === 0);
  }
  function reapplyFilters() {
    for (const input of document.querySelectorAll("input[data-filter]")) applyFilter(input);
  }

  // -- live fragments: fetch the region's HTML every few seconds while the tab is visible ---------------------
  let failures = 0;
  function setStatus(text, bad) {
    const el = statusEl();
    if (el) { el.textContent = " · " + text; el.classList.toggle("error", !!bad); }
  }
  async function refresh(region) {
    if (document.hidden || region.dataset.busy) return;
    if (region.contains(document.activeElement) && document.activeElement.matches("input,select,textarea")) return;
    region.dataset.busy = "1";
    try {
      const resp = await poll(region.dataset.live, region);
      if (resp.status === 401) { location.reload(); return; }
      if (resp.status !== 304) {  // 304: the region holds this render already, nothing to parse or swap
        const text = await resp.text();
        if (!resp.ok) throw new Error(text.slice(0, 200) || resp.statusText);
        swap(region, text);
      }
      failures = 0;
      setStatus("live · updated " + new Date().toLocaleTimeString());
    } catch (err) {
      failures++;
      setStatus("not updating: " + (err.message || err) + " (retrying)", true);
    } finally {
      delete region.dataset.busy;
    }
  }
  // One poll: the ETag of what `holder` shows goes along, so an unchanged fragment costs a bodiless 304
  // (the HTTP cache is bypassed: "no-store" would never revalidate, so the script does it itself).
  async function poll(url, holder) {
    const headers = { "X-Requested-With": "fetch" };
    if (holder.dataset.etag) headers["If-None-Match"] = holder.dataset.etag;
    const resp = await fetch(url, { credentials: "same-origin", headers, cache: "no-store" });
    if (resp.ok) holder.dataset.etag = resp.headers.get("ETag") || "";
    return resp;
  }
  function swap(region, text) {
    if (region.innerHTML === text) return;
    const follow = region.hasAttribute("data-follow") &&
      region.scrollTop + region.clientHeight >= region.scrollHeight - 8;
    region.innerHTML = text;
    if (follow) region.scrollTop = region.scrollHeight;
    refreshTimes(region);
    reapplyFilters();
  }
  function pollEvery(region) {
    const every = Math.max(1000, parseInt(region.dataset.every || "2000", 10));
    setInterval(() => refresh(region), every);
  }
  // A region with data-stream (the logs) shows its fragment once, then appends each server-sent event to it;
  // when the stream is refused (503: the node's follow slots are taken) or breaks for good, it polls instead.
  const MAX_STREAM_LINES = 2000;
  function appendLine(region, line) {
    const follow = region.scrollTop + region.clientHeight >= region.scrollHeight - 8;
    if (region.dataset.placeholder !== "done") { region.textContent = ""; region.dataset.placeholder = "done"; }
    region.append(document.createTextNode(line + "\n"));
    while (region.childNodes.length > MAX_STREAM_LINES) region.removeChild(region.firstChild);
    if (follow) region.scrollTop = region.scrollHeight;
  }
  async function stream(region) {
    await refresh(region);
    region.dataset.placeholder = /^\(no output yet\)$/.test(region.textContent.trim()) ? "" : "done";
    const source = new EventSource(region.dataset.stream);
    source.onopen = () => { region.dataset.streaming = "1"; setStatus("live · following"); };
    source.onmessage = (event) => appendLine(region, event.data);
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        delete region.dataset.streaming;
        setStatus("live · re-read every few seconds");
        pollEvery(region);
      }
    };
  }
  function startLive() {
    const regions = [...document.querySelectorAll("[data-live]")];
    if (regions.length) setStatus("live");
    for (const region of regions) {
      if (region.dataset.stream && window.EventSource) stream(region);
      else pollEvery(region);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) for (const region of regions) if (!region.dataset.streaming) refresh(region);
    });
  }

  // -- charts --------------------------------------------------------------------------------------------
  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function fmt(v, unit) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    if (unit === "ms") return v >= 1000 ? (v / 1000).toFixed(2) + " s" : (v >= 10 ? Math.round(v) : v.toFixed(1)) + " ms";
    const digits = unit === "replicas" ? 0 : (Math.abs(v) >= 100 ? 0 : 1);
    const text = v && Math.abs(v) < 1 && unit !== "replicas"
      ? String(Number(v.toPrecision(2)))
      : v.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
    return unit === "%" ? text + "%" : text + " " + unit;
  }
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }
  function clock(ms, span) {
    const d = new Date(ms);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    return span > 6 * 3600e3 ? d.toLocaleDateString([], { weekday: "short" }) + " " + hm : hm;
  }

  function drawChart(fig, data, index, tip) {
    const unit = fig.dataset.unit;
    fig.querySelector("svg")?.remove();
    const W = 320, H = 120, L = 40, R = 8, T = 8, B = 18;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", preserveAspectRatio: "none" });
    const from = data.from, to = data.to, span = to - from;
    const pts = data.points.filter((p) => p[index] !== null && p[index] !== undefined).map((p) => [p[0], p[index]]);
    const top = Math.max(0, ...pts.map((p) => p[1]));
    // replicas are whole: the axis goes to the next even count, so its middle line is whole too
    const max = unit === "replicas" ? Math.max(2, 2 * Math.ceil(top / 2)) : niceMax(top * 1.05);
    const x = (t) => L + ((t - from) / span) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (H - T - B);
    for (const f of [0, 0.5, 1]) {
      el("line", { class: "gridline", x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }, svg);
      const label = el("text", { x: L - 4, y: y(max * f) + 3, "text-anchor": "end" }, svg);
      label.textContent = fmt(max * f, unit === "replicas" ? "" : unit).replace(/ (req\/s|replicas)$/, "");
    }
    el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
    for (const f of [0, 0.5, 1]) {
      const t = el("text", { x: L + f * (W - L - R), y: H - 4, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle" }, svg);
      t.textContent = f === 1 ? "now" : clock(from + f * span, span);
    }
    const caption = fig.querySelector("figcaption");
    let now = caption.querySelector(".now");
    if (!now) { now = document.createElement("span"); now.className = "now"; caption.appendChild(now); }
    now.textContent = pts.length ? fmt(pts[pts.length - 1][1], unit) : "-";
    if (pts.length === 0) {
      const t = el("text", { class: "nodata", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" }, svg);
      t.textContent = "no samples in this range";
    } else {
      // a gap longer than 5 sampling steps is drawn as a gap, not a line across it
      const step = span / 180;
      let d = "", area = "", run = [];
      const flush = () => {
        if (!run.length) return;
        d += run.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join("");
        area += "M" + x(run[0][0]).toFixed(1) + " " + y(0) + run.map((p) => "L" + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join("") +
          "L" + x(run[run.length - 1][0]).toFixed(1) + " " + y(0) + "Z";
        run = [];
      };
      for (let i = 0; i < pts.length; i++) {
        if (run.length && pts[i][0] - run[run.length - 1][0] > Math.max(5 * step, 15000)) flush();
        run.push(pts[i]);
      }
      flush();
      el("path", { class: "area", d: area }, svg);
      el("path", { class: "line", d: d }, svg);
    }
    for (const dec of data.decisions) {
      const mx = x(dec.t);
      const g = el("g", { class: "mark", tabindex: "0", role: "button", "data-decision": "" }, svg);
      const text = `${new Date(dec.t).toLocaleTimeString([], { hour12: false })} · ${dec.current} → ${dec.target} replicas: ${dec.reason}`;
      g.setAttribute("aria-label", "Scaling decision " + text);
      el("title", {}, g).textContent = text;
      el("line", { x1: mx, x2: mx, y1: T, y2: H - B }, g);
      el("path", { d: `M${mx - 5} ${H - B + 7}L${mx + 5} ${H - B + 7}L${mx} ${H - B}Z` }, g);
      const show = () => { tip.textContent = "Scaling: " + text; tip.classList.add("on"); };
      g.addEventListener("mouseenter", show);
      g.addEventListener("focus", show);
      g.addEventListener("click", show);
    }
    fig.appendChild(svg);
  }

  async function loadCharts(box) {
    if (document.hidden) return;
    const tip = document.getElementById("chart-tip");
    try {
      const resp = await poll(box.dataset.charts + "?range=" + encodeURIComponent(box.dataset.range), box);
      if (resp.status === 401) { location.reload(); return; }
      if (resp.status === 304) return;  // the charts drawn are current
      if (!resp.ok) throw new Error(resp.statusText);
      const data = await resp.json();
      for (const fig of box.querySelectorAll("figure.chart")) {
        const index = data.series.indexOf(fig.dataset.key) + 1;
        if (index > 0) drawChart(fig, data, index, tip);
      }
      box.dataset.loaded = String(data.points.length);
    } catch (err) {
      if (tip) tip.textContent = "The charts could not load: " + (err.message || err) + " (retrying)";
    }
  }
  function startCharts() {
    for (const box of document.querySelectorAll("[data-charts]")) {
      loadCharts(box);
      const every = { "15m": 5000, "1h": 15000, "24h": 60000 }[box.dataset.range] || 15000;
      setInterval(() => loadCharts(box), every);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const input of document.querySelectorAll("input[data-filter]")) {
      input.addEventListener("input", () => applyFilter(input));
      applyFilter(input);
    }
    refreshTimes();
    setInterval(() => refreshTimes(), 10000);
    startLive();
    startCharts();
  });
})();
