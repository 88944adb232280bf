// egresswatch live dashboard: the /v1/ws/events feed (protocol in docs/live.md), plus REST:
// /v1/alerts (on open and on every reconnect; live `alert` messages after), the chosen key's
// last 10 minutes from /v1/metrics/network/history (on open and when the key changes), then
// polls of /v1/metrics/network (p50/p95/p99 per route) and /v1/resilience/state.
// No framework, no CDN: this file, dashboard.css and dashboard.html are the whole page.
"use strict";

(() => {
  const MAX_ROWS = 200;            // live event rows kept in the DOM
  const POLL_MS = 5000;            // REST polls
  const SPAN_MS = 10 * 60 * 1000;  // chart: the last 10 minutes of stream time
  const MAX_ALERT_ROWS = 100;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
  const RANK = { info: 0, warning: 1, error: 2, critical: 3 };

  const $ = (id) => document.getElementById(id);
  const form = $("filters");
  const query = new URLSearchParams(location.search);
  const token = query.get("token");
  for (const name of ["min_severity", "service", "route"]) {
    if (query.get(name)) form.elements[name].value = query.get(name);
  }

  const live = { ws: null, attempt: 0, session: 0, received: 0, dropped: 0, filter: readFilter(),
    filterPending: false, unfiltered: 0, alerts: 0 };  // unfiltered: events the server should not have sent
  const alerts = new Map();        // alert_id -> latest record, with its state
  const latency = new Map();       // "service method route" -> [{t, p50, p95, p99}], by t
  const keyParts = new Map();      // "service method route" -> {service, method, route}
  const historyLoaded = new Set(); // keys whose history was fetched

  // -- filters ----------------------------------------------------------------------------

  function readFilter() {
    const value = (name) => form.elements[name].value.trim() || null;
    return { min_severity: value("min_severity") || "info", service: value("service"),
      route: value("route") };
  }

  function matches(filter, row) {
    if (RANK[row.dataset.severity] < RANK[filter.min_severity]) return false;
    if (filter.service && row.dataset.service !== filter.service) return false;
    if (!filter.route || row.dataset.route === filter.route) return true;
    if (!filter.route.includes("*")) return false;
    const glob = filter.route.replace(/[.+?^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*");
    return new RegExp(`^${glob}$`).test(row.dataset.route);
  }

  let filterTimer = null;
  form.addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(applyFilter, 250);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); applyFilter(); });

  function applyFilter() {
    live.filter = readFilter();
    const url = new URLSearchParams(token ? { token } : {});
    for (const [name, value] of Object.entries(live.filter)) {
      if (value && !(name === "min_severity" && value === "info")) url.set(name, value);
    }
    window.history.replaceState(null, "", `${location.pathname}?${url}`);
    for (const row of [...$("events").tBodies[0].rows]) {
      if (row.dataset.severity && !matches(live.filter, row)) row.remove();
    }
    live.filterPending = true;
    $("filter-state").textContent = "applying…";
    send({ type: "filter", ...live.filter });
  }

  // -- the WebSocket, with reconnect and backoff -------------------------------------------

  function wsUrl() {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(live.filter)) if (value) params.set(name, value);
    if (token) params.set("token", token);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/v1/ws/events?${params}`;
  }

  function send(message) {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(message));
  }

  function connect() {
    setStatus("connecting", "connecting…");
    const ws = new WebSocket(wsUrl());
    live.ws = ws;
    let count = 0;                   // data messages received in this session, for acks
    ws.onopen = () => {
      live.attempt = 0;
      live.filterPending = false;  // the URL carried the current filter
      setStatus("live", "live");
      ws.send(JSON.stringify({ type: "ack", count: 0 }));  // opt in to flow control
    };
    ws.onmessage = (event) => {
      const rows = [];
      for (const line of event.data.split("\n")) {
        const message = JSON.parse(line);
        if (message.type === "event" || message.type === "alert") count += 1;
        handle(message, rows);
      }
      if (rows.length) addRows(rows);
      ws.send(JSON.stringify({ type: "ack", count }));
      showCounters();
    };
    ws.onclose = (event) => {
      if (live.ws !== ws) return;
      live.ws = null;
      const base = BACKOFF_MS[Math.min(live.attempt, BACKOFF_MS.length - 1)];
      const delay = Math.round(base * (0.75 + Math.random() / 2));
      live.attempt += 1;
      const why = event.reason ? `${event.code} ${event.reason}` : `${event.code}`;
      setStatus("down", `disconnected (${why}), retrying in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(connect, delay);
    };
  }

  function handle(message, rows) {
    switch (message.type) {
      case "event": {
        live.received += 1;
        const row = eventRow(message);
        if (matches(live.filter, row)) rows.push(row);
        else if (!live.filterPending) document.body.dataset.unfiltered = ++live.unfiltered;
        break;   // (events already in flight when the filter changed are dropped quietly)
      }
      case "alert": onAlert(message); break;
      case "dropped": {
        const shed = message.shed || 0;
        live.dropped += message.count + shed;
        const parts = [];
        if (message.count) parts.push(`${message.count} events dropped: this page fell behind`);
        if (shed) parts.push(`${shed} events skipped by the server (overload)`);
        rows.push(noteRow(parts.join("; ")));
        break;
      }
      case "ping": send({ type: "pong", id: message.id }); break;
      case "hello": live.session = message.session; loadAlerts(); break;
      case "filter":
        live.filterPending = false;
        $("filter-state").textContent = "filter applied";
        break;
      case "error": $("filter-state").textContent = `server: ${message.message}`; break;
      default: break;
    }
  }

  function setStatus(state, text) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function showCounters() {
    $("counters").textContent =
      `session ${live.session} · ${live.received} events · ${live.dropped} dropped`;
  }

  // -- live events ------------------------------------------------------------------------

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function eventRow(event) {
    const tr = document.createElement("tr");
    Object.assign(tr.dataset, { severity: event.severity, service: event.service,
      route: event.route, trace: event.trace_id });
    const time = new Date((event.started_at * 1000) + event.elapsed_ms).toLocaleTimeString();
    tr.append(
      cell(time), cell(event.severity, `sev sev-${event.severity}`), cell(event.service),
      cell(event.method), cell(event.route), cell(event.status_code ?? event.outcome),
      cell(event.elapsed_ms.toFixed(1), "num"), cell(event.trace_id, "trace"));
    return tr;
  }

  function noteRow(text) {
    const tr = document.createElement("tr");
    tr.className = "gap";
    const td = cell(text);
    td.colSpan = 8;
    tr.append(td);
    return tr;
  }

  function addRows(rows) {
    const body = $("events").tBodies[0];
    body.prepend(...rows.reverse());
    while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
    $("event-note").textContent = `latest ${body.rows.length}`;
  }

  // -- alerts: GET /v1/alerts on open (and after a reconnect), live `alert` messages after --

  function stateOf(record) { return record.status === "resolved" ? "resolved" : "firing"; }

  function keepAlert(record) {
    const held = alerts.get(record.alert_id);
    const state = record.state || stateOf(record);
    if (held && (held.evaluated_at > record.evaluated_at
        || (held.state === "resolved" && state === "firing"))) return;  // stale
    alerts.set(record.alert_id, { ...record, state });
  }

  async function loadAlerts() {
    try {
      const body = await getJson("/v1/alerts");
      for (const item of body.items) keepAlert(item);
      $("alerts-note").dataset.loaded = "1";
    } catch (error) {
      $("alerts-note").textContent = `unavailable (${error.message})`;
      return;
    }
    showAlerts();
  }

  function onAlert(record) {
    live.alerts += 1;
    document.body.dataset.liveAlerts = live.alerts;  // alert messages seen on the socket
    keepAlert(record);
    showAlerts();
  }

  function ago(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  }

  function clock(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

  function alertValue(a) {
    const value = a.observed ? a.observed.value : null;
    if (a.kind === "latency_p99") {
      return value == null ? "p99: no data" : `p99 ${value.toFixed(0)} ms (> ${a.threshold} ms)`;
    }
    const rate = value == null ? "no data" : `${(value * 100).toFixed(2)}%`;
    const burn = a.burn_rate == null ? "" : `burn ${a.burn_rate.toFixed(1)}x · `;
    return `${burn}${a.kind === "error_rate" ? "errors" : "timeouts"} ${rate}`;
  }

  function showAlerts() {
    const list = [...alerts.values()].sort((a, b) =>
      (a.state === "firing" ? 0 : 1) - (b.state === "firing" ? 0 : 1) || b.fired_at - a.fired_at);
    const now = Date.now() / 1000;
    $("alerts-table").tBodies[0].replaceChildren(...list.slice(0, MAX_ALERT_ROWS).map((a) => {
      const tr = document.createElement("tr");
      Object.assign(tr.dataset, { alertId: a.alert_id, state: a.state, rule: a.rule,
        service: a.service, route: a.route });
      const since = a.state === "firing"
        ? `${clock(a.fired_at)} (for ${ago(now - a.fired_at)})`
        : `${clock(a.fired_at)} → ${clock(a.resolved_at || a.evaluated_at)}`;
      const traces = cell((a.example_trace_ids || []).slice(0, 3).join(" "), "trace");
      tr.title = a.message;
      tr.append(cell(a.state), cell(a.severity), cell(a.rule), cell(a.service), cell(a.method),
        cell(a.route), cell(since), cell(alertValue(a), "num"), traces);
      return tr;
    }));
    const firing = list.filter((a) => a.state === "firing");
    $("alerts-note").textContent = list.length
      ? `${firing.length} firing · ${list.length - firing.length} resolved` : "none";
    const banner = $("alerts");
    banner.replaceChildren(...firing.map((a) => {
      const p = document.createElement("p");
      p.textContent = a.message;
      p.dataset.trace = a.trace_id;
      return p;
    }));
    banner.hidden = firing.length === 0;
  }

  // -- REST polls: latency per route and breakers -------------------------------------------

  async function getJson(path) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(path, { headers, cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // A point per view end (event time, ms): a later read of the same end replaces it.
  function addPoint(key, end, item) {
    const points = latency.get(key) || [];
    const point = { t: end * 1000, p50: item.p50_ms, p95: item.p95_ms, p99: item.p99_ms };
    const at = points.findIndex((p) => p.t >= point.t);
    if (at === -1) points.push(point);
    else if (points[at].t === point.t) points[at] = point;
    else points.splice(at, 0, point);
    const newest = points[points.length - 1].t;
    while (points.length && points[0].t < newest - SPAN_MS) points.shift();
    latency.set(key, points);
  }

  async function loadHistory(key) {
    const parts = keyParts.get(key);
    if (!parts || historyLoaded.has(key)) return;
    historyLoaded.add(key);
    const params = new URLSearchParams({ window: "1m", minutes: "10", limit: "1", ...parts });
    try {
      const body = await getJson(`/v1/metrics/network/history?${params}`);
      for (const series of body.series) {
        for (const point of series.points) addPoint(key, point.end, point);
      }
      $("chart").dataset.history = key;
    } catch (error) {
      historyLoaded.delete(key);
      $("chart-note").textContent = `history unavailable (${error.message})`;
    }
  }

  async function pollLatency() {
    try {
      const body = await getJson("/v1/metrics/network?window=1m&limit=1000");
      const items = body.items.filter((item) => item.requests > 0);
      for (const item of items) {
        const key = `${item.service} ${item.method} ${item.route}`;
        keyParts.set(key, { service: item.service, method: item.method, route: item.route });
        addPoint(key, item.end, item);
      }
      items.sort((a, b) => b.requests - a.requests);
      showRoutes(items);
      $("chart-note").textContent = "";
      await loadHistory($("chart-route").value);
    } catch (error) {
      $("chart-note").textContent = `unavailable (${error.message})`;
    }
    drawChart();
  }

  function showRoutes(items) {
    const select = $("chart-route");
    const chosen = select.value;
    select.replaceChildren(...items.map((item) => {
      const key = `${item.service} ${item.method} ${item.route}`;
      return new Option(key, key, false, key === chosen);
    }));
    $("routes").tBodies[0].replaceChildren(...items.slice(0, 20).map((item) => {
      const tr = document.createElement("tr");
      const ms = (v) => (v == null ? "–" : v.toFixed(1));
      tr.append(cell(item.service), cell(item.method), cell(item.route),
        cell(item.rate_per_s.toFixed(1), "num"), cell(`${(item.error_rate * 100).toFixed(1)}%`,
          "num"), cell(ms(item.p50_ms), "num"), cell(ms(item.p95_ms), "num"),
        cell(ms(item.p99_ms), "num"));
      return tr;
    }));
  }

  $("chart-route").addEventListener("change", async () => {
    drawChart();
    await loadHistory($("chart-route").value);
    drawChart();
  });

  function drawChart() {
    const canvas = $("chart");
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    const pad = { left: 52, right: 10, top: 10, bottom: 22 };
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    const points = latency.get($("chart-route").value) || [];
    canvas.dataset.points = points.length;
    if (points.length === 0) {
      ctx.fillStyle = "#6b7385";
      ctx.fillText("waiting for window data…", pad.left, height / 2);
      return;
    }
    const now = points[points.length - 1].t;   // the latest view's end (stream time)
    const span = SPAN_MS;
    const top = Math.max(1, ...points.map((p) => p.p99 || 0)) * 1.15;
    const x = (t) => pad.left + (width - pad.left - pad.right) * (1 - (now - t) / span);
    const y = (v) => height - pad.bottom - (height - pad.top - pad.bottom) * (v / top);
    ctx.strokeStyle = "#dde1e8";
    ctx.fillStyle = "#6b7385";
    for (let i = 0; i <= 4; i += 1) {
      const v = (top * i) / 4;
      ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
      ctx.fillText(`${v.toFixed(v < 10 ? 1 : 0)} ms`, 4, y(v) + 4);
    }
    ctx.fillText("-10 min", pad.left, height - 6);
    ctx.fillText("now", width - pad.right - 22, height - 6);
    const styles = getComputedStyle(document.documentElement);
    for (const q of ["p50", "p95", "p99"]) {
      ctx.strokeStyle = styles.getPropertyValue(`--${q}`).trim();
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      for (const p of points) {
        if (p[q] == null) continue;
        if (started) ctx.lineTo(x(p.t), y(p[q])); else ctx.moveTo(x(p.t), y(p[q]));
        started = true;
      }
      ctx.stroke();
    }
  }

  async function pollBreakers() {
    try {
      const body = await getJson("/v1/resilience/state");
      const upstreams = body.upstreams || [];
      $("breakers").tBodies[0].replaceChildren(...upstreams.map((u) => {
        const tr = document.createElement("tr");
        const rate = typeof u.failure_rate === "number" ? `${(u.failure_rate * 100).toFixed(1)}%` : "–";
        const state = (u.breaker_state || "not reported") + (u.stuck_half_open ? " (stuck)" : "");
        tr.append(cell(u.service), cell(u.upstream), cell(state, `state-${u.breaker_state}`),
          cell(rate, "num"), cell(u.calls ?? "–", "num"));
        return tr;
      }));
      $("breakers-note").textContent = upstreams.length ? "" : "no upstream reported yet";
    } catch (error) {
      $("breakers-note").textContent = `unavailable (${error.message})`;
    }
  }

  connect();
  showCounters();
  loadAlerts();
  pollLatency();
  pollBreakers();
  setInterval(pollLatency, POLL_MS);
  setInterval(pollBreakers, POLL_MS);
  setInterval(showAlerts, POLL_MS);  // "for 3m12s" moves on
})();
