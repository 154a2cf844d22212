// The AUREN operations console. Everything it shows comes from the gateway's JSON and
// server-sent events; text is always set as text (never parsed as HTML), and the page runs
// under a policy that allows scripts from this origin only.
"use strict";
(function () {
  const $ = (selector) => document.querySelector(selector);
  const PALETTE = ["#0969da", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#cf222e",
                   "#0a7c86", "#6e7781", "#fb8500", "#24292f", "#2da44e", "#a475f9"];
  let session = null;
  let stream = null;
  let traffic = {t: [], webhooks: {}, latency: {}, chats: []};
  const charts = {};
  const conversations = {};

  // --- helpers -------------------------------------------------------------------------------

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined) {
        node.append(typeof child === "string" ? document.createTextNode(child) : child);
      }
    }
    return node;
  }

  function fmt(value, digits, unit) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const number = typeof value === "number" ? value.toLocaleString("en", {
      maximumFractionDigits: digits === undefined ? 1 : digits}) : String(value);
    return unit ? `${number} ${unit}` : number;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.round(seconds);
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} d`;
  }

  function badge(status) {
    const known = ["pass", "warn", "fail"].includes(status) ? status : "unknown";
    return el("span", {className: `badge status-${known}`, text: String(status || "n/a").toUpperCase()});
  }

  function fill(tbody, rows, empty, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el("tr", {}, [el("td", {colspan: String(columns), className: "note", text: empty})]));
      return;
    }
    for (const row of rows) tbody.append(row);
  }

  function banner(text) {
    const node = $("#banner");
    node.textContent = text || "";
    node.hidden = !text;
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = {"Accept": "application/json"};
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.method && opts.method !== "GET" && session) headers["X-CSRF-Token"] = session.csrf;
    let response;
    try {
      response = await fetch(path, {method: opts.method || "GET", headers, cache: "no-store",
        credentials: "same-origin",
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body)});
    } catch (error) {
      return {status: 0, ok: false, body: {detail: "the gateway is unreachable"}};
    }
    let body = null;
    try { body = await response.json(); } catch (error) { body = null; }
    if (response.status === 401 && session && path !== "/console/api/login") {
      signedOut("The session has ended; sign in again.");
    }
    return {status: response.status, ok: response.ok, body};
  }

  // --- signing in ---------------------------------------------------------------------------

  function signedOut(message) {
    session = null;
    if (stream) { stream.close(); stream = null; }
    $("#app-view").hidden = true;
    $("#logout").hidden = true;
    $("#whoami").textContent = "";
    $("#login-view").hidden = false;
    $("#login-error").textContent = message || "";
  }

  async function boot() {
    if ("serviceWorker" in navigator) {
      navigator.serviceWorker.register("/sw.js", {scope: "/"}).catch(() => {});
    }
    const current = await api("/console/api/session");
    if (current.ok && current.body.signed_in) { start(current.body); return; }
    signedOut("");
    if (current.status === 0) {
      banner("The gateway is unreachable: the console will connect when it is back.");
      setTimeout(boot, 5000);
      return;
    }
    banner("");
    if (current.body && current.body.configured === false) {
      $("#login-note").textContent = "No console logins are configured: set GATEWAY_CONSOLE_USERS " +
        "(auren console hash-password) or AUREN_API_KEYS on the gateway.";
    }
  }

  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#login-key").value;
    const body = key ? {key} : {user: $("#login-user").value, password: $("#login-password").value};
    $("#login-submit").disabled = true;
    const answer = await api("/console/api/login", {method: "POST", body});
    $("#login-submit").disabled = false;
    $("#login-password").value = "";
    $("#login-key").value = "";
    if (answer.ok) { start(answer.body); return; }
    $("#login-error").textContent = (answer.body && answer.body.detail) || "Sign-in failed.";
  });

  $("#logout").addEventListener("click", async () => {
    await api("/console/api/logout", {method: "POST", body: {}});
    signedOut("Signed out.");
  });

  function start(current) {
    session = current;
    $("#login-view").hidden = true;
    $("#app-view").hidden = false;
    $("#logout").hidden = false;
    $("#whoami").textContent = `${current.user} (${current.role})`;
    const readOnly = "Read-only: this needs the operator role.";
    $("#validate-start").disabled = !current.may.validate;
    $("#validate-note").textContent = current.may.validate ? "" : readOnly;
    $("#chat-send").disabled = !current.may.chat;
    $("#chat-note").textContent = current.may.chat ? "" : readOnly;
    loadAll();
  }

  async function loadAll() {
    const [now, series] = await Promise.all([api("/console/api/now"), api("/console/api/traffic")]);
    if (now.ok) renderNow(now.body);
    if (series.ok) { traffic = series.body; drawCharts(true); }
    loadReports();
    loadValidation();
    connect();
  }

  function connect() {
    if (stream) stream.close();
    stream = new EventSource("/console/api/stream");
    stream.addEventListener("snapshot", (event) => {
      const data = JSON.parse(event.data);
      banner("");
      renderNow(data.now);
      if (data.point) addPoint(data.point);
    });
    stream.addEventListener("expired", () => signedOut("The session has expired; sign in again."));
    stream.onerror = async () => {
      banner("Lost the live stream; reconnecting …");
      const check = await api("/console/api/session");
      if (check.status === 0) banner("The gateway is unreachable: showing the last data; reconnecting …");
      else if (check.ok && !check.body.signed_in) signedOut("The session has ended; sign in again.");
    };
  }

  // --- now ------------------------------------------------------------------------------------

  function renderNow(now) {
    if (!now || !now.services) return;
    const overall = $("#overall");
    overall.className = `badge status-${now.overall}`;
    overall.textContent = String(now.overall).toUpperCase();
    $("#now-time").textContent = now.time ? new Date(now.time).toLocaleTimeString() : "…";
    $("#now-time").setAttribute("datetime", now.time || "");
    fill($("#services tbody"), now.services.map((s) => el("tr", {
      className: `status-${s.status}`, "data-service": s.name, "data-status": s.status}, [
      el("th", {scope: "row"}, [s.title, el("br"), el("code", {text: s.url})]),
      el("td", {}, [badge(s.status)]),
      el("td", {className: "num", text: duration(s.uptime_s)}),
      el("td", {text: s.version || "–"}),
      el("td", {text: s.mode || "–"}),
      el("td", {className: "num", text: fmt(s.response_ms, 1, "ms")}),
      el("td", {text: s.detail || ""}),
    ])), "no service", 7);
    fill($("#dependencies tbody"), now.dependencies.map((d) => el("tr", {
      className: `status-${d.status}`}, [
      el("td", {text: d.service}), el("th", {scope: "row", text: d.name}),
      el("td", {}, [badge(d.status)]),
      el("td", {className: "num", text: fmt(d.value, 2, d.unit)}),
      el("td", {text: d.detail || ""}),
    ])), "no dependency reported (embedded: the store only)", 5);
    fill($("#breakers tbody"), now.breakers.map((b) => el("tr", {
      className: `status-${b.status}`}, [
      el("td", {text: b.service}), el("th", {scope: "row", text: b.name}),
      el("td", {}, [el("span", {className: `badge status-${b.status}`, text: String(b.state)})]),
      el("td", {className: "num", text: `${fmt(b.window_failures, 0)} of ${fmt(b.window_calls, 0)}`}),
      el("td", {className: "num", text: fmt(b.in_flight, 0)}),
      el("td", {text: b.reason || ""}),
    ])), "no circuit breaker (embedded: no Kafka, PostgreSQL or Redis)", 6);
    const admission = now.admission || {};
    $("#tile-in-flight").textContent = admission.limit ?
      `${fmt(admission.in_flight, 0)} / ${fmt(admission.limit, 0)}` : "–";
    $("#tile-waiting").textContent = fmt(admission.waiting, 0);
    $("#tile-spool").textContent = now.spool ? fmt(now.spool.records, 0, "records") : "n/a";
    $("#tile-lag").textContent = now.consumer_lag === null || now.consumer_lag === undefined ?
      "n/a" : fmt(now.consumer_lag, 0, "records");
    $("#tile-dead").textContent = now.fetch_dead === null || now.fetch_dead === undefined ?
      "n/a" : fmt(now.fetch_dead, 0);
    renderPeople(now.people || []);
  }

  // --- traffic --------------------------------------------------------------------------------

  function addPoint(point) {
    const n = traffic.t.length;
    traffic.t.push(point.t);
    const keys = new Set([...Object.keys(traffic.webhooks), ...Object.keys(point.webhooks)]);
    let fresh = false;
    for (const key of keys) {
      if (!traffic.webhooks[key]) { traffic.webhooks[key] = new Array(n).fill(null); fresh = true; }
      traffic.webhooks[key].push(point.webhooks[key] === undefined ? null : point.webhooks[key]);
    }
    for (const [service, qs] of Object.entries(point.latency)) {
      for (const [q, value] of Object.entries(qs)) {
        const key = `${service}/${q}`;
        if (!traffic.latency[key]) { traffic.latency[key] = new Array(n).fill(null); fresh = true; }
      }
    }
    for (const key of Object.keys(traffic.latency)) {
      const [service, q] = key.split("/");
      const value = (point.latency[service] || {})[q];
      traffic.latency[key].push(value === undefined ? null : value);
    }
    traffic.chats.push(point.chats === undefined ? null : point.chats);
    const cutoff = point.t - 3600;
    while (traffic.t.length && traffic.t[0] < cutoff) {
      traffic.t.shift();
      traffic.chats.shift();
      for (const column of [...Object.values(traffic.webhooks), ...Object.values(traffic.latency)]) {
        column.shift();
      }
    }
    drawCharts(fresh);
  }

  function chartOptions(container, series, yLabel, axes) {
    return {
      width: Math.max(300, container.clientWidth - 8), height: 240,
      series: [{}, ...series],
      axes: axes || [{}, {label: yLabel}],
      legend: {live: false},
      cursor: {drag: {x: false, y: false}},
    };
  }

  function draw(name, container, series, data, yLabel, rebuild, axes, scales) {
    if (typeof uPlot === "undefined") return;
    const existing = charts[name];
    if (existing && !rebuild && existing.series.length === series.length + 1) {
      existing.setData(data);
      return;
    }
    if (existing) existing.destroy();
    container.replaceChildren();
    const options = chartOptions(container, series, yLabel, axes);
    if (scales) options.scales = scales;
    charts[name] = new uPlot(options, data, container);
  }

  function drawCharts(rebuild) {
    const t = traffic.t;
    const hookKeys = Object.keys(traffic.webhooks).sort();
    const hooks = $("#chart-webhooks");
    draw("webhooks", hooks, hookKeys.map((key, i) => ({
      label: key, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: false})),
      [t, ...hookKeys.map((k) => traffic.webhooks[k])], "webhooks/s", rebuild);
    let sum = 0;
    let last = 0;
    for (const key of hookKeys) {
      for (const value of traffic.webhooks[key]) sum += value || 0;
      last += traffic.webhooks[key][t.length - 1] || 0;
    }
    hooks.dataset.points = String(t.length);
    hooks.dataset.sum = sum.toFixed(2);
    hooks.dataset.last = last.toFixed(2);
    const latencyKeys = Object.keys(traffic.latency).filter((k) => !k.startsWith("neuros/")).sort();
    draw("latency", $("#chart-latency"), latencyKeys.map((key, i) => ({
      label: `${key} ms`, stroke: PALETTE[i % PALETTE.length], width: 1.5})),
      [t, ...latencyKeys.map((k) => traffic.latency[k])], "ms", rebuild);
    const neurosKeys = Object.keys(traffic.latency).filter((k) => k.startsWith("neuros/")).sort();
    draw("neuros", $("#chart-neuros"), [
      {label: "chats/s", stroke: PALETTE[0], width: 2, scale: "rate"},
      ...neurosKeys.map((key, i) => ({label: `${key} ms`, stroke: PALETTE[(i + 1) % PALETTE.length],
                                      width: 1.5, scale: "ms"}))],
      [t, traffic.chats, ...neurosKeys.map((k) => traffic.latency[k])], "", rebuild,
      [{}, {scale: "rate", label: "chats/s"}, {scale: "ms", side: 1, label: "ms", grid: {show: false}}],
      {rate: {auto: true}, ms: {auto: true}});
  }

  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(charts)) {
      const container = $(`#chart-${name}`);
      chart.setSize({width: Math.max(300, container.clientWidth - 8), height: 240});
    }
  });

  // --- people and sources -----------------------------------------------------------------------

  function renderPeople(figures) {
    const box = $("#people-overview");
    const signature = JSON.stringify(figures);
    if (box.dataset.signature === signature) return;
    box.dataset.signature = signature;
    box.replaceChildren();
    if (!figures.length) {
      box.append(el("p", {id: "no-connections", className: "note",
        text: "No connections yet: the bridge exports no connection or fetch figures. " +
              "Per provider, connected users, last data received and stale sources appear " +
              "here once people connect their wearables."}));
      return;
    }
    // One row per provider, one column per figure (its other labels in its name).
    const providers = new Map();
    const columns = new Set();
    for (const f of figures) {
      const rest = Object.entries(f.labels).filter(([k]) => k !== "provider")
        .map(([k, v]) => `${k}=${v}`).join(", ");
      const column = f.metric.replace(/^auren_/, "") + (rest ? ` (${rest})` : "");
      columns.add(column);
      const provider = f.labels.provider || "all";
      if (!providers.has(provider)) providers.set(provider, {});
      providers.get(provider)[column] = f.value;
    }
    const names = [...columns].sort();
    const rows = [...providers.keys()].sort().map((provider) => el("tr", {}, [
      el("th", {scope: "row", text: provider}),
      ...names.map((c) => el("td", {className: "num", text: fmt(providers.get(provider)[c], 0)})),
    ]));
    box.append(table("Connections and fetching, per provider", ["provider", ...names], rows));
  }

  function section(title, part, render, none) {
    const box = el("div", {className: "person-part"}, [el("h3", {text: title})]);
    if (!part || !part.available) {
      const reason = part && part.status === 404 ? none : (part && part.detail) || none;
      box.append(el("p", {className: "note", text: reason}));
    } else {
      box.append(render(part));
    }
    return box;
  }

  function table(caption, headers, rows) {
    return el("table", {}, [el("caption", {text: caption}),
      el("thead", {}, [el("tr", {}, headers.map((h) => el("th", {scope: "col", text: h})))]),
      el("tbody", {}, rows.length ? rows : [el("tr", {}, [el("td", {colspan: String(headers.length),
        className: "note", text: "none"})])])]);
  }

  function objectRows(value) {
    const list = Array.isArray(value) ? value : Array.isArray((value || {}).connections) ?
      value.connections : Array.isArray((value || {}).coverage) ? value.coverage :
      Array.isArray((value || {}).sources) ? value.sources : [value];
    return list.filter((x) => x && typeof x === "object");
  }

  function genericTable(caption, value) {
    const rows = objectRows(value);
    const headers = [...new Set(rows.flatMap((r) => Object.keys(r)))].slice(0, 8);
    return table(caption, headers, rows.map((r) => el("tr", {}, headers.map((h) => el("td", {
      text: typeof r[h] === "object" && r[h] !== null ? JSON.stringify(r[h]) : fmt(r[h], 2)}))))
    );
  }

  $("#person-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = $("#person-id").value.trim();
    const box = $("#person");
    if (!id) return;
    box.replaceChildren(el("p", {className: "note", text: "Loading …"}));
    const answer = await api(`/console/api/people/${encodeURIComponent(id)}`);
    box.replaceChildren();
    if (!answer.ok) {
      box.append(el("p", {className: "error", text: (answer.body && answer.body.detail) || "Failed."}));
      return;
    }
    const p = answer.body;
    box.append(el("h3", {className: "person-title", text: `User ${p.user_id}`}));
    box.append(section("Connections", p.connections,
      (part) => genericTable("Connected providers", part.body), "No connections yet."));
    box.append(section("Coverage (30 days)", p.coverage,
      (part) => genericTable("Last data per source and metric", part.body), "No coverage yet."));
    box.append(section("Recent events", p.events, (part) => {
      const rows = part.events.map((e) => el("tr", {}, [
        el("td", {text: e.start}), el("td", {text: e.metric}),
        el("td", {className: "num", text: fmt(e.value, 2, e.unit)}),
        el("td", {text: e.provider}), el("td", {text: e.received_at || ""})]));
      const note = el("p", {className: "note", text:
        `${part.count}${part.more ? "+" : ""} events ${part.window_days ? `in the last ${part.window_days} days` : "in all"}; the newest ${part.events.length}:`});
      return el("div", {}, [note, table("Recent events", ["start", "metric", "value", "provider", "received"], rows)]);
    }, "No events."));
  });

  // --- validation -------------------------------------------------------------------------------

  async function loadReports() {
    const answer = await api("/console/api/reports");
    if (!answer.ok) return;
    fill($("#reports tbody"), answer.body.reports.map((r) => el("tr", {"data-report": r.name}, [
      el("th", {scope: "row"}, [r.html ? el("a", {href: `/console/reports/${r.name}/report.html`,
        target: "_blank", rel: "noopener", text: r.generated_at || r.name}) : r.name]),
      el("td", {}, [el("span", {className: `badge status-${r.verdict === "PASS" ? "pass" :
        r.verdict === "FAIL" || r.verdict === "NOT RECONCILED" ? "fail" : "warn"}`,
        text: r.verdict || "?"})]),
      el("td", {text: r.quick ? "quick" : "full"}),
      el("td", {className: "num", text: r.throughput_ratio ? `${r.throughput_ratio}x` : "–"}),
      el("td", {text: r.target || ""}),
    ])), `No reports in ${answer.body.directory} yet.`, 5);
  }

  function renderValidation(state) {
    const phases = $("#validate-phases");
    phases.replaceChildren(...state.phases.map((p) => el("li", {
      className: `status-${p.status === "pass" ? "pass" : p.status === "running" ? "warn" :
        p.status === "n/a" ? "unknown" : "fail"}`}, [`${p.name} `, badge(p.status)])));
    const log = $("#validate-log");
    for (const line of state.lines) log.append(`${line}\n`);
    log.scrollTop = log.scrollHeight;
    const note = $("#validate-note");
    if (state.state === "running") {
      note.textContent = `Running (started by ${state.started_by}) …`;
      $("#validate-start").disabled = true;
    } else if (state.state !== "idle") {
      note.textContent = `${state.state}${state.verdict ? `: ${state.verdict}` : ""}` +
        `${state.verdict_note ? ` — ${state.verdict_note}` : ""}`;
      $("#validate-start").disabled = !(session && session.may.validate);
    }
  }

  async function loadValidation() {
    const answer = await api("/console/api/validate");
    if (!answer.ok) return;
    $("#validate-log").textContent = "";
    renderValidation(answer.body);
    if (answer.body.state === "running") follow();
  }

  function follow() {
    $("#validate-log").textContent = "";
    const source = new EventSource("/console/api/validate/stream");
    source.addEventListener("progress", (event) => renderValidation(JSON.parse(event.data)));
    source.addEventListener("end", () => { source.close(); loadReports(); });
    source.onerror = () => source.close();
  }

  $("#validate-start").addEventListener("click", async () => {
    const answer = await api("/console/api/validate", {method: "POST", body: {}});
    if (answer.ok || answer.status === 409) { follow(); return; }
    $("#validate-note").textContent = (answer.body && answer.body.detail) || "Could not start.";
  });

  // --- chat -----------------------------------------------------------------------------------

  function evidenceTable(evidence) {
    return table("Evidence", ["metric", "statistic", "window", "value", "days", "baseline", "status"],
      evidence.map((e) => el("tr", {className: "evidence"}, [
        el("td", {text: e.metric}), el("td", {text: e.statistic}),
        el("td", {text: e.window ? `${e.window.start} … ${e.window.end} (${e.window.days} d)` : ""}),
        el("td", {className: "num", text: fmt(e.value, 2, e.unit)}),
        el("td", {className: "num", text: fmt(e.n_days, 0)}),
        el("td", {className: "num", text: e.baseline === null || e.baseline === undefined ? "–" :
          `${fmt(e.baseline, 2)}${e.low !== null && e.low !== undefined ? ` (${fmt(e.low, 2)}–${fmt(e.high, 2)})` : ""}`}),
        el("td", {text: e.status || ""}),
      ])));
  }

  $("#chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = $("#chat-user").value.trim();
    const message = $("#chat-message").value.trim();
    if (!user || !message) return;
    const log = $("#chat-log");
    log.append(el("div", {className: "chat-turn question"}, [
      el("p", {}, [el("strong", {text: `${user}: `}), message])]));
    $("#chat-send").disabled = true;
    const body = {user_id: user, message};
    if (conversations[user]) body.conversation_id = conversations[user];
    const answer = await api("/console/api/chat", {method: "POST", body});
    $("#chat-send").disabled = !(session && session.may.chat);
    if (!answer.ok) {
      log.append(el("div", {className: "chat-turn answer"}, [el("p", {className: "error",
        text: (answer.body && answer.body.detail) || `NEUROS answered ${answer.status}`})]));
      return;
    }
    conversations[user] = answer.body.conversation_id;
    $("#chat-message").value = "";
    const turn = el("div", {className: "chat-turn answer"}, [
      el("p", {}, [el("strong", {text: "NEUROS: "}), answer.body.reply]),
      el("p", {className: "note", text: `intent ${answer.body.intent}, ${answer.body.model}`})]);
    if (answer.body.evidence && answer.body.evidence.length) turn.append(evidenceTable(answer.body.evidence));
    else turn.append(el("p", {className: "note", text: "No evidence: this answer used no data."}));
    log.append(turn);
  });

  window.addEventListener("offline", () => banner("Offline: showing the last data."));
  window.addEventListener("online", () => { banner(""); if (session) loadAll(); else boot(); });
  boot();
})();
