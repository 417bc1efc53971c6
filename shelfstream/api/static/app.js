// shelfstream dashboard: plain JS, no build step. The one third-party script is the chart library, uPlot,
// vendored in the package (static/vendor/uplot/, checked against deploy/vendor/uplot.sha256) and loaded
// before this file from the app's own origin.
// The token lives in sessionStorage (gone when the tab closes) and travels only in the Authorization
// header: the live stream is read with fetch() rather than EventSource, which cannot send headers.
"use strict";

(() => {
  const TOKEN_KEY = "shelfstream.token";
  const FEED_MAX = 50;
  const CHART_WINDOWS = 48;

  const $ = (id) => document.getElementById(id);

  const app = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    stores: new Map(), // store_id -> summary
    alerts: [], // newest first, every store this token sees
    inventory: new Map(), // store_id -> inventory answer
    windows: new Map(), // store_id -> windows, oldest first
    kpis: new Map(), // store_id -> daily KPIs answer (newest day first)
    deliveries: [], // newest first
    trucks: [],
    view: { name: "sign-in", store: null },
    stream: null, // AbortController of the live stream
    lastEventId: null,
    retryTimer: null,
  };

  // --- small helpers ------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en") : "0");
  const storeHref = (id) => "#/store/" + encodeURIComponent(id);

  // Every time the page shows is on one clock: the store's own local time, as its window records give
  // its zone (UTC until they do), each labelled with the zone's abbreviation (CEST, UTC, GMT-4, ...).
  // Alerts carry event times and deliveries the dispatcher's; shown raw they read as two clocks.
  function storeZone(storeId) {
    const windows = app.windows.get(storeId);
    const latest = windows && windows.length ? windows[windows.length - 1].timezone : null;
    return latest || (app.stores.get(storeId) || {}).timezone || "UTC";
  }
  const abbreviations = new Map(); // zone -> Intl formatter of the zone's short name
  function zoneAbbreviation(ts, zone) {
    let f = abbreviations.get(zone);
    if (!f) {
      f = new Intl.DateTimeFormat("en-GB", { timeZone: zone, timeZoneName: "short" });
      abbreviations.set(zone, f);
    }
    const part = f.formatToParts(new Date(ts)).find((p) => p.type === "timeZoneName");
    return part ? part.value : zone;
  }
  // "2026-08-01 14:20 CEST" (or "14:20 CEST" without the day) in the store's local time.
  function stamp(ts, storeId, withDay = true) {
    if (typeof ts !== "string" || Number.isNaN(Date.parse(ts))) return "";
    const zone = storeZone(storeId);
    const local = localTime(ts, zone);
    return (withDay ? local.day + " " : "") + local.clock + " " + zoneAbbreviation(ts, zone);
  }

  class AuthError extends Error {}
  // 403: the token is valid but this store is not its own; the page says so instead of showing nothing.
  class RefusedError extends Error {}

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + app.token } });
    if (response.status === 401) throw new AuthError("That token was not accepted.");
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        message = (await response.json()).error || message;
      } catch (_) {
        /* not JSON: keep the status line */
      }
      throw response.status === 403 ? new RefusedError(message) : new Error(message);
    }
    return response.json();
  }

  // A POST of JSON with the token; the answer's JSON, or an Error with the API's one-line reason.
  async function apiPost(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { Authorization: "Bearer " + app.token, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.status === 401) throw new AuthError("That token was not accepted.");
    let answer = {};
    try {
      answer = await response.json();
    } catch (_) {
      /* not JSON: the status line says it */
    }
    if (!response.ok) throw new Error(answer.error || response.status + " " + response.statusText);
    return answer;
  }

  function setLive(state, text) {
    const live = $("live");
    live.hidden = false;
    live.classList.toggle("on", state === "on");
    live.classList.toggle("off", state === "off");
    $("live-text").textContent = text;
  }

  // --- sign in and out ----------------------------------------------------------------------------

  async function signIn(token) {
    app.token = token;
    const me = await api("/v1/me");
    sessionStorage.setItem(TOKEN_KEY, token);
    app.me = me;
    $("who").textContent = me.role === "hq" ? "HQ: every store" : "Store " + me.store_id;
    $("who").hidden = false;
    $("sign-out").hidden = false;
    await loadAll();
    startStream();
    route();
  }

  function signOut(message) {
    if (app.stream) app.stream.abort();
    clearTimeout(app.retryTimer);
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(app, {
      token: null, me: null, alerts: [], deliveries: [], trucks: [], lastEventId: null, stream: null,
    });
    app.stores.clear();
    app.inventory.clear();
    app.windows.clear();
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("live").hidden = true;
    $("sign-in-error").textContent = message || "";
    show("sign-in");
    $("token").value = "";
    $("token").focus();
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) {
      $("sign-in-error").textContent = "Enter your access token.";
      $("token").focus();
      return;
    }
    $("sign-in-error").textContent = "";
    try {
      await signIn(token);
    } catch (error) {
      app.token = null;
      $("sign-in-error").textContent = error instanceof AuthError ? error.message : "Could not sign in: " + error.message;
      $("token").focus();
    }
  });

  $("sign-out").addEventListener("click", () => signOut("Signed out."));

  // --- loading the current state ------------------------------------------------------------------

  async function loadAll() {
    const [stores, alerts, deliveries, trucks] = await Promise.all([
      api("/v1/stores"),
      api("/v1/alerts?limit=200"),
      api("/v1/deliveries?limit=100"),
      api("/v1/trucks"),
    ]);
    app.stores = new Map(stores.stores.map((s) => [s.store_id, s]));
    app.alerts = alerts.alerts;
    app.deliveries = deliveries.deliveries;
    app.trucks = trucks.trucks;
    if (app.view.name === "store" && app.view.store) await loadStore(app.view.store);
  }

  async function loadStore(storeId) {
    const id = encodeURIComponent(storeId);
    const [inventory, windows, kpis] = await Promise.all([
      api("/v1/stores/" + id + "/inventory").catch((error) => {
        if (error instanceof AuthError || error instanceof RefusedError) throw error;
        return { store_id: storeId, products: [], missing: error.message };
      }),
      api("/v1/stores/" + id + "/windows?limit=400"),
      // The history tables' daily KPIs: optional (none before the first `history ingest`)
      api("/v1/kpis?per=store&limit=14&store_id=" + id).catch((error) => {
        if (error instanceof AuthError || error instanceof RefusedError) throw error;
        return { kpis: [], note: error.message };
      }),
    ]);
    app.inventory.set(storeId, inventory);
    app.windows.set(storeId, windows.windows);
    app.kpis.set(storeId, kpis);
  }

  // --- the live stream (server-sent events over fetch) --------------------------------------------

  function startStream() {
    if (app.stream) app.stream.abort();
    const controller = new AbortController();
    app.stream = controller;
    setLive("wait", "connecting");
    readStream(controller).catch(() => {
      /* handled in readStream */
    });
  }

  async function readStream(controller) {
    const headers = { Authorization: "Bearer " + app.token, Accept: "text/event-stream" };
    if (app.lastEventId) headers["Last-Event-ID"] = app.lastEventId;
    let reconnect = true;
    try {
      const response = await fetch("/v1/stream", { headers, signal: controller.signal, cache: "no-store" });
      if (response.status === 401) {
        reconnect = false;
        signOut("Your token is no longer accepted.");
        return;
      }
      if (!response.ok || !response.body) throw new Error("stream answered " + response.status);
      setLive("on", "live");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          dispatchBlock(block);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) reconnect = false;
    }
    if (reconnect && app.stream === controller && app.token) {
      setLive("off", "reconnecting");
      app.retryTimer = setTimeout(async () => {
        try {
          await loadAll(); // whatever happened while we were away
          render();
        } catch (error) {
          if (error instanceof AuthError) {
            signOut("Your token is no longer accepted.");
            return;
          }
        }
        if (app.stream === controller) startStream();
      }, 3000);
    }
  }

  function dispatchBlock(block) {
    let event = "message";
    const data = [];
    let id = null;
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id") id = value;
    }
    if (id) app.lastEventId = id;
    if (!data.length) return;
    let payload;
    try {
      payload = JSON.parse(data.join("\n"));
    } catch (_) {
      return;
    }
    handle(event, payload);
  }

  function handle(event, data) {
    switch (event) {
      case "alert":
        onAlert(data);
        break;
      case "stock":
        onStock(data);
        break;
      case "window":
        onWindow(data);
        break;
      case "delivery":
        onDelivery(data);
        break;
      case "trucks":
        app.trucks = data;
        renderTrucks();
        break;
      default:
        break;
    }
  }

  function summaryOf(storeId) {
    let summary = app.stores.get(storeId);
    if (!summary) {
      summary = {
        store_id: storeId, products: 0, on_hand_total: 0, stock_outs: 0, open_requests: 0,
        recent_anomalies: 0, last_anomaly: null, at_risk: [],
      };
      app.stores.set(storeId, summary);
    }
    return summary;
  }

  function onAlert(alert) {
    if (app.alerts.some((a) => a.alert_id === alert.alert_id)) return;
    app.alerts.unshift(alert);
    if (app.alerts.length > 500) app.alerts.length = 500;
    if (alert.kind === "restock_request" && alert.expected_stockout_at) {
      const summary = summaryOf(alert.store_id);
      summary.at_risk = (summary.at_risk || []).filter((i) => i.product_id !== alert.product_id);
      summary.at_risk.push(alert);
      summary.at_risk.sort((a, b) => a.expected_stockout_at.localeCompare(b.expected_stockout_at));
      if (app.view.name === "overview") renderStores();
      if (app.view.name === "store" && app.view.store === alert.store_id) renderAtRisk();
    }
    if (alert.kind === "anomaly") {
      const summary = summaryOf(alert.store_id);
      summary.recent_anomalies += 1;
      summary.last_anomaly = alert;
      if (app.view.name === "overview") renderStores();
      if (app.view.name === "store" && app.view.store === alert.store_id) {
        renderCards();
        renderChart();
      }
    }
    const feed = app.view.name === "overview" ? $("overview-alerts")
      : app.view.name === "store" && app.view.store === alert.store_id ? $("store-alerts") : null;
    if (feed) {
      const item = alertItem(alert, app.view.name === "overview");
      item.classList.add("fresh");
      feed.prepend(item);
      while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
      feed.nextElementSibling.hidden = true;
    }
  }

  function onStock(stock) {
    app.inventory.set(stock.store_id, stock);
    const summary = summaryOf(stock.store_id);
    Object.assign(summary, {
      products: stock.products.length,
      on_hand_total: stock.on_hand_total,
      stock_outs: stock.stock_outs,
      open_requests: stock.open_requests,
    });
    if (app.view.name === "overview") renderStores();
    if (app.view.name === "store" && app.view.store === stock.store_id) {
      renderCards();
      renderStock();
    }
  }

  function onWindow(window) {
    if (window.timezone) summaryOf(window.store_id).timezone = window.timezone;
    const list = app.windows.get(window.store_id) || [];
    list.push(window);
    if (list.length > 400) list.splice(0, list.length - 400);
    app.windows.set(window.store_id, list);
    if (app.view.name === "store" && app.view.store === window.store_id) renderChart();
  }

  function onDelivery(delivery) {
    app.deliveries.unshift(delivery);
    if (app.deliveries.length > 200) app.deliveries.length = 200;
    const summary = summaryOf(delivery.store_id);
    summary.at_risk = (summary.at_risk || []).filter((i) => i.product_id !== delivery.product_id);
    if (app.view.name === "overview") renderStores();
    if (app.view.name === "store" && app.view.store === delivery.store_id) renderAtRisk();
    if (app.view.name === "store" && app.view.store === delivery.store_id) renderDeliveries();
  }

  // --- views --------------------------------------------------------------------------------------

  function show(name) {
    for (const section of ["sign-in", "overview", "store", "refused"]) $(section).hidden = section !== name;
  }

  async function route() {
    if (!app.token || !app.me) {
      app.view = { name: "sign-in", store: null };
      show("sign-in");
      return;
    }
    const match = /^#\/store\/(.+)$/.exec(location.hash);
    if (match) {
      const storeId = decodeURIComponent(match[1]);
      app.view = { name: "store", store: storeId };
      try {
        await loadStore(storeId);
      } catch (error) {
        if (error instanceof AuthError) {
          signOut(error.message);
          return;
        }
        if (error instanceof RefusedError) {
          app.view = { name: "refused", store: storeId, reason: error.message };
          renderRefused();
          $("refused-title").focus({ preventScroll: false });
          return;
        }
        app.inventory.set(storeId, { store_id: storeId, products: [], missing: error.message });
        app.windows.set(storeId, []);
      }
    } else {
      app.view = { name: "overview", store: null };
    }
    render();
    const heading = app.view.name === "store" ? $("store-title") : $("overview-title");
    heading.focus({ preventScroll: false });
  }

  function render() {
    if (app.view.name === "overview") {
      show("overview");
      document.title = "Stores · shelfstream";
      renderStores();
      renderFeed($("overview-alerts"), app.alerts, true);
      renderTrucks();
    } else if (app.view.name === "store") {
      show("store");
      const id = app.view.store;
      $("store-title").textContent = "Store " + id;
      for (const holder of document.querySelectorAll(".store-zone")) holder.textContent = storeZone(id);
      document.title = "Store " + id + " · shelfstream";
      renderCards();
      renderStock();
      renderKpis();
      renderChart();
      renderFeed($("store-alerts"), app.alerts.filter((a) => a.store_id === id), false);
      renderAtRisk();
      renderTrucks();
      renderDeliveries();
    } else if (app.view.name === "refused") {
      renderRefused();
    }
  }

  function renderRefused() {
    show("refused");
    const id = app.view.store;
    document.title = "Not your store · shelfstream";
    $("refused-title").textContent = "Store " + id + " is not yours to see";
    $("refused-reason").textContent = "The API refused: " + app.view.reason + ".";
  }

  function renderStores() {
    const body = $("stores-body");
    const rows = [...app.stores.values()].sort((a, b) => a.store_id.localeCompare(b.store_id));
    body.replaceChildren(
      ...rows.map((s) =>
        el(
          "tr",
          {},
          el("th", { scope: "row" }, el("a", { href: storeHref(s.store_id), text: s.store_id })),
          el("td", { class: "num", text: fmt(s.on_hand_total) }),
          el("td", { class: s.stock_outs ? "num bad" : "num", text: fmt(s.stock_outs) }),
          el("td", { class: "num", text: fmt(s.open_requests) }),
          el("td", { class: s.recent_anomalies ? "num bad" : "num", text: fmt(s.recent_anomalies) }),
          el("td", {}, s.last_anomaly ? stamp(s.last_anomaly.ts, s.store_id, false) + " " + (s.last_anomaly.explanation || "") : "—"),
          el("td", {}, atRiskText(s.at_risk || [], s.store_id)),
        ),
      ),
    );
    $("stores-empty").hidden = rows.length > 0;
  }

  function alertText(alert) {
    switch (alert.kind) {
      case "anomaly":
        return alert.explanation || alert.metric + " was " + alert.observed;
      case "out_of_stock":
        return alert.product_id + " is out of stock (" + alert.on_hand + " on hand)";
      case "restock_request":
        return "restock " + alert.product_id + ": " + alert.on_hand + " on hand, asking for " + alert.requested_quantity;
      case "anomaly_withdrawn":
        return alert.reason || "alert " + alert.withdrawn_alert_id + " withdrawn";
      case "product_change":
        return alert.product_id + " changed: " + Object.entries(alert.changes || {})
          .map(([field, [from, to]]) => field + " " + from + " → " + to).join(", ");
      default:
        return alert.kind;
    }
  }

  function alertItem(alert, withStore) {
    const label = alert.kind.replace(/_/g, " ");
    return el(
      "li",
      { class: "alert " + alert.kind },
      el(
        "div",
        { class: "head" },
        el("span", { class: "badge " + alert.kind, text: label }),
        el("time", { datetime: alert.ts, text: stamp(alert.ts, alert.store_id) }),
        withStore ? el("a", { href: storeHref(alert.store_id), text: alert.store_id }) : null,
        alert.kind === "anomaly" ? el("span", { class: "muted", text: "severity " + alert.severity }) : null,
      ),
      el("p", { class: "text", text: alertText(alert) }),
      alert.kind === "anomaly" ? feedbackControl(alert) : null,
    );
  }

  // An anomaly alert's "Not an anomaly" button: it posts the operator's mark, which the processor
  // teaches the store's detector (docs/detection.md, "Feedback"); once marked, the alert says so.
  function feedbackControl(alert) {
    if (alert.feedback === "not_anomaly") {
      return el("p", { class: "feedback marked", text: "Marked: not an anomaly" });
    }
    const status = el("span", { class: "muted", role: "status" });
    const button = el("button", {
      type: "button",
      class: "mark",
      text: "Not an anomaly",
      "aria-label": "Mark this alert as not an anomaly",
    });
    button.addEventListener("click", async () => {
      button.disabled = true;
      status.textContent = "Sending…";
      try {
        await apiPost("/v1/alerts/" + encodeURIComponent(alert.alert_id) + "/feedback", { verdict: "not_anomaly" });
        for (const a of app.alerts) if (a.alert_id === alert.alert_id) a.feedback = "not_anomaly";
        box.replaceWith(feedbackControl({ ...alert, feedback: "not_anomaly" }));
      } catch (err) {
        button.disabled = false;
        status.textContent = "Not sent: " + err.message;
      }
    });
    const box = el("p", { class: "feedback" }, button, " ", status);
    return box;
  }

  function renderFeed(list, alerts, withStore) {
    list.replaceChildren(...alerts.slice(0, FEED_MAX).map((a) => alertItem(a, withStore)));
    list.nextElementSibling.hidden = alerts.length > 0;
  }

  function atRiskText(items, storeId) {
    if (!items.length) return "—";
    const first = items[0];
    return items.length + " (" + first.product_id + " empty at " + stamp(first.expected_stockout_at, storeId, false) + ")";
  }

  function renderAtRisk() {
    const items = summaryOf(app.view.store).at_risk || [];
    $("at-risk-body").replaceChildren(
      ...items.map((i) =>
        el(
          "tr",
          {},
          productCell(i.product_id),
          el("td", {}, el("time", { datetime: i.expected_stockout_at, text: stamp(i.expected_stockout_at, app.view.store) })),
          el("td", { class: "num", text: fmt(i.on_hand) }),
          el("td", { class: "num", text: fmt(i.requested_quantity) }),
          el("td", { text: i.reason === "forecast" ? "sales forecast" : "below threshold" }),
        ),
      ),
    );
    $("at-risk-empty").hidden = items.length > 0;
  }

  function renderCards() {
    const id = app.view.store;
    const summary = summaryOf(id);
    $("card-on-hand").textContent = fmt(summary.on_hand_total);
    $("card-stock-outs").textContent = fmt(summary.stock_outs);
    $("card-open-requests").textContent = fmt(summary.open_requests);
    $("card-anomalies").textContent = fmt(summary.recent_anomalies);
  }

  // A product's name can be 200 characters (the contract's bound): one line, cut with an ellipsis so the
  // numbers beside it stay on the page, and the whole name in the cell's tooltip.
  function productCell(text) {
    return el("th", { scope: "row", class: "product", title: text }, el("span", { class: "clip", text }));
  }

  function renderStock() {
    const inventory = app.inventory.get(app.view.store) || { products: [] };
    const label = { out: "out of stock", low: "low", ok: "ok" };
    $("stock-body").replaceChildren(
      ...inventory.products.map((p) =>
        el(
          "tr",
          {},
          productCell(p.name ? p.product_id + " · " + p.name : p.product_id),
          el("td", { class: p.on_hand <= 0 ? "num bad" : "num", text: fmt(p.on_hand) }),
          el(
            "td",
            {},
            el("span", { class: "badge " + p.status, text: label[p.status] || p.status }),
            p.open_request ? el("span", { class: "muted", text: " restock requested" }) : null,
          ),
        ),
      ),
    );
    const empty = $("stock-empty");
    empty.hidden = inventory.products.length > 0;
    empty.textContent = inventory.missing ? inventory.missing : "No stock known for this store yet.";
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + "%";
  }

  function maybe(value, digits) {
    // Missing data is not zero: an unknown figure shows as a dash
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
  }

  function renderKpis() {
    const found = app.kpis.get(app.view.store) || { kpis: [] };
    const rows = found.kpis.filter((r) => r.store_id === app.view.store);
    $("kpis-body").replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          {},
          el("th", { scope: "row", text: r.day }),
          el("td", { class: "num", text: fmt(r.units_sold) }),
          el("td", { class: "num", text: maybe(r.revenue, 2) }),
          el("td", { class: r.availability !== null && r.availability < 0.92 ? "num bad" : "num", text: pct(r.availability) }),
          el("td", { class: "num", text: fmt(r.products_out_of_stock) + " of " + fmt(r.products) }),
          el("td", { class: "num", text: maybe(r.lost_units, 1) }),
          el("td", { class: "num", text: maybe(r.lost_value, 2) }),
          el("td", { class: "num", text: pct(r.sell_through) }),
        ),
      ),
    );
    const empty = $("kpis-empty");
    empty.hidden = rows.length > 0;
    empty.textContent = found.note ? "No daily KPIs yet: " + found.note : "No daily KPIs for this store yet.";
  }

  function tripText(t) {
    if (!t.stops || !t.stops.length) {
      return t.store_id ? " last at " + t.store_id + (t.product_id ? " (" + t.product_id + ")" : "") : "";
    }
    const stops = t.stops.map((s) => s.store_id + " (" + s.products.length + (s.products.length === 1 ? " product, " : " products, ") + fmt(s.units) + " units)");
    return ": " + stops.join(" → ");
  }

  function renderTrucks() {
    const storeView = app.view.name === "store";
    const list = storeView ? $("store-trucks") : $("overview-trucks");
    const trucks = storeView
      ? app.trucks.filter((t) => (t.stores || [t.store_id]).includes(app.view.store))
      : app.trucks;
    list.replaceChildren(
      ...trucks.map((t) => {
        const road = t.status === "on the road";
        const count = fmt(t.deliveries) + (t.deliveries === 1 ? " delivery" : " deliveries");
        return el("li", { class: road ? "road" : "" }, el("strong", { text: t.truck_id }), " " + t.status + tripText(t) + ", " + count);
      }),
    );
    if (!storeView) $("overview-trucks-empty").hidden = trucks.length > 0;
  }

  function renderDeliveries() {
    const rows = app.deliveries.filter((d) => d.store_id === app.view.store).slice(0, 15);
    $("deliveries-body").replaceChildren(
      ...rows.map((d) =>
        el(
          "tr",
          {},
          el("td", {}, el("time", { datetime: d.ts, text: stamp(d.ts, d.store_id) })),
          el("td", { text: d.truck_id || "" }),
          el("td", { class: "product", title: d.product_id }, el("span", { class: "clip", text: d.product_id })),
          el("td", { class: "num", text: fmt(d.quantity) }),
        ),
      ),
    );
    $("deliveries-empty").hidden = rows.length > 0;
  }

  // --- the chart: uPlot (vendored under static/vendor/uplot/, served by the app itself) ------------

  // The chart's data, in uPlot's column order: x (each window's start, in seconds), sales, refunds, then
  const S_LOW = 3; // the detector's expected range of sales: the band is drawn between LOW and HIGH
  const S_HIGH = 4;
  const S_ANOMALY = 5; // points only, at the flagged metric's value; null where nothing was flagged
  // The chart is in the store's local time: its zone comes with its window records (absent: UTC).
  const TIME_STEPS = [900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
  const chart = { plot: null, store: null, zone: "UTC", rows: [], observer: null, built: 0 };

  const toSeconds = (ts) => Date.parse(ts) / 1000;
  // Without the library (its file failed to load) the rest of the page still works; the table stays.
  const charting = typeof uPlot === "function";
  const zoned = (seconds) => uPlot.tzDate(new Date(seconds * 1000), chart.zone);
  const zoneOf = (rows) => (rows.length && rows[rows.length - 1].w.timezone) || "UTC";
  const formats = new Map(); // zone -> Intl formatter of "YYYY-MM-DD, HH:MM"
  function localTime(ts, zone) {
    let f = formats.get(zone);
    if (!f) {
      const parts = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" };
      f = new Intl.DateTimeFormat("en-CA", { ...parts, hourCycle: "h23", timeZone: zone });
      formats.set(zone, f);
    }
    const p = Object.fromEntries(f.formatToParts(new Date(ts)).map(({ type, value }) => [type, value]));
    return { day: `${p.year}-${p.month}-${p.day}`, clock: `${p.hour}:${p.minute}` };
  }
  const hhmm = charting ? uPlot.fmtDate("{HH}:{mm}") : null;
  const ymd = charting ? uPlot.fmtDate("{YYYY}-{MM}-{DD}") : null;

  function cssColour(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function withAlpha(hex, alpha) {
    const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
    if (!m) return hex;
    return `rgba(${parseInt(m[1], 16)}, ${parseInt(m[2], 16)}, ${parseInt(m[3], 16)}, ${alpha})`;
  }

  const range = (w) => (w.expected && Array.isArray(w.expected.sales) ? w.expected.sales : null);

  // The windows drawn for a store (the latest CHART_WINDOWS tumbling ones), each with what was flagged
  // and why: the window's own anomaly metrics and the sentences of the anomaly alerts for it.
  function chartRows(id) {
    const explained = new Map();
    for (const a of app.alerts) {
      if (a.store_id !== id || a.kind !== "anomaly") continue;
      const list = explained.get(a.window_end) || [];
      list.push(a);
      explained.set(a.window_end, list);
    }
    const windows = (app.windows.get(id) || []).filter((w) => w.kind === "tumbling").slice(-CHART_WINDOWS);
    return windows.map((w) => {
      const alerts = explained.get(w.window_end) || [];
      const metrics = [...new Set([...(w.anomalies || []), ...alerts.map((a) => a.metric)])];
      const why = alerts.map((a) => a.explanation).filter(Boolean);
      return { w, metrics, why, flagged: metrics.length > 0 || alerts.length > 0 };
    });
  }

  function chartData(rows) {
    const x = [], sales = [], refunds = [], low = [], high = [], marks = [];
    for (const { w, metrics, flagged } of rows) {
      x.push(toSeconds(w.window_start));
      sales.push(w.sales || 0);
      refunds.push(w.refunds || 0);
      const r = range(w);
      low.push(r ? r[0] : null);
      high.push(r ? r[1] : null);
      // The marker sits on the line of the metric that was flagged (sales for any other metric).
      marks.push(flagged ? (metrics.includes("sales") || !metrics.includes("refunds") ? w.sales || 0 : w.refunds || 0) : null);
    }
    return [x, sales, refunds, low, high, marks];
  }

  function windowLabel(w) {
    const start = localTime(w.window_start, chart.zone);
    return start.day + " " + start.clock + "–" + localTime(w.window_end, chart.zone).clock;
  }

  function rowText(row) {
    const { w, metrics, why, flagged } = row;
    const r = range(w);
    let text = `${windowLabel(row.w)} ${chart.zone}: ${fmt(w.sales)} sales, ${fmt(w.refunds)} refunds`;
    if (r) text += `, expected ${fmt(r[0])}–${fmt(r[1])} sales`;
    if (flagged) text += "; anomaly" + (why.length ? ": " + why.join(" ") : metrics.length ? " in " + metrics.join(", ") : "");
    return text;
  }

  function chartSize(holder) {
    const width = Math.max(280, Math.floor(holder.clientWidth || 640));
    return { width, height: width < 500 ? 200 : 240 };
  }

  function timeTicks(u, splits) {
    let lastDay = null;
    return splits.map((s) => {
      const d = zoned(s);
      const today = ymd(d);
      const label = lastDay === null || today !== lastDay ? hhmm(d) + "\n" + today : hhmm(d);
      lastDay = today;
      return label;
    });
  }

  function buildPlot(holder, data) {
    const sales = cssColour("--sales"), refunds = cssColour("--refunds"), bad = cssColour("--bad");
    const muted = cssColour("--muted"), line = cssColour("--line"), panel = cssColour("--panel");
    const axis = { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line, width: 1 }, font: "12px system-ui, sans-serif" };
    const edge = (label) => ({ label, stroke: "transparent", width: 0, points: { show: false } });
    const opts = {
      ...chartSize(holder),
      tzDate: zoned,
      legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { size: 8 } },
      scales: { x: { time: true }, y: { range: (u, min, max) => uPlot.rangeNum(0, Math.max(1, max), 0.1, true) } },
      // Time ticks fall on window boundaries: whole quarter hours, hours, then days.
      axes: [{ ...axis, values: timeTicks, space: 60, incrs: TIME_STEPS }, { ...axis, size: 44 }],
      series: [
        {},
        { label: "sales", stroke: sales, width: 2.5, points: { show: false } },
        { label: "refunds", stroke: refunds, width: 2, dash: [6, 3], points: { show: false } },
        edge("expected sales, low"),
        edge("expected sales, high"),
        {
          label: "anomaly",
          stroke: bad,
          paths: () => null,
          points: { show: true, size: 12, width: 1.5, stroke: panel, fill: bad },
        },
      ],
      bands: [{ series: [S_HIGH, S_LOW], fill: withAlpha(sales, 0.16) }],
      hooks: {
        setCursor: [
          (u) => {
            const row = u.cursor.idx === null || u.cursor.idx === undefined ? null : chart.rows[u.cursor.idx];
            $("chart-readout").textContent = row ? rowText(row) : "";
          },
        ],
      },
    };
    return new uPlot(opts, data, holder);
  }

  function destroyPlot() {
    if (chart.plot) chart.plot.destroy();
    chart.plot = null;
    chart.store = null;
    $("chart").uplot = null;
  }

  function renderChart() {
    const id = app.view.store;
    const holder = $("chart");
    const rows = chartRows(id);
    chart.rows = rows;
    const zone = zoneOf(rows);
    const rezoned = zone !== chart.zone;
    chart.zone = zone;
    $("chart-zone").textContent = zone;
    $("chart-zone-table").textContent = zone;
    $("chart-readout").textContent = "";
    if (rows.length && charting) {
      const data = chartData(rows);
      if (chart.plot && chart.store === id && !rezoned && holder.contains(chart.plot.root)) {
        chart.plot.setData(data); // new windows over the live stream: same chart, new data
      } else {
        destroyPlot();
        holder.replaceChildren();
        chart.plot = buildPlot(holder, data);
        chart.store = id;
        chart.built += 1;
        holder.uplot = chart.plot; // the chart's uPlot instance, for the browser test and the console
      }
    } else {
      destroyPlot();
      const text = !rows.length
        ? "No closed windows yet: the first appears once 15 minutes of store time have passed."
        : "The chart could not be loaded; its numbers are in the table below.";
      holder.replaceChildren(el("p", { class: "empty", text }));
    }
    // What the chart holds, counted from uPlot's own data (the browser test reads these).
    const held = chart.plot ? chart.plot.data : [[], [], [], [], [], []];
    const count = (column) => column.filter((v) => v !== null && v !== undefined).length;
    holder.dataset.store = id;
    holder.dataset.windows = String(held[0].length);
    holder.dataset.bands = String(count(held[S_HIGH]));
    holder.dataset.anomalies = String(count(held[S_ANOMALY]));
    holder.dataset.built = String(chart.built);
    renderChartText(rows);
  }

  // The chart's content without the canvas: a description for screen readers, the anomalies beside it
  // with their sentences, and every number in the table.
  function renderChartText(rows) {
    const flagged = rows.filter((r) => r.flagged);
    const last = rows[rows.length - 1];
    const r = last ? range(last.w) : null;
    $("chart-desc").textContent = !last
      ? "No closed windows yet."
      : `${rows.length} windows from ${localTime(rows[0].w.window_start, chart.zone).clock} to ` +
        `${localTime(last.w.window_end, chart.zone).clock} ${chart.zone}; ` +
        `latest ${fmt(last.w.sales)} sales and ${fmt(last.w.refunds)} refunds` +
        (r ? ` (expected ${fmt(r[0])}–${fmt(r[1])})` : "") +
        `; ${flagged.length} marked as ${flagged.length === 1 ? "an anomaly" : "anomalies"}.`;
    $("chart-anomalies").replaceChildren(
      ...flagged.slice().reverse().map((row) =>
        el(
          "li",
          {},
          el("time", { datetime: row.w.window_start, text: windowLabel(row.w) }),
          " ",
          row.why.length ? row.why.join(" ") : "anomaly in " + (row.metrics.join(", ") || "sales"),
        ),
      ),
    );
    $("chart-anomalies-empty").hidden = flagged.length > 0;
    $("chart-table").replaceChildren(
      ...rows.slice().reverse().map((row) =>
        el(
          "tr",
          {},
          el("td", { text: windowLabel(row.w) }),
          el("td", { class: "num", text: fmt(row.w.sales) }),
          el("td", { class: "num", text: fmt(row.w.refunds) }),
          el("td", { text: range(row.w) ? fmt(range(row.w)[0]) + "–" + fmt(range(row.w)[1]) : "" }),
          el("td", { text: row.flagged ? row.metrics.join(", ") || "anomaly" : "" }),
        ),
      ),
    );
  }

  // The chart follows its container's width (a phone's, a resized window's) without being rebuilt.
  function watchChartSize() {
    const holder = $("chart");
    chart.observer = new ResizeObserver(() => {
      if (!chart.plot || !holder.clientWidth) return;
      const size = chartSize(holder);
      if (size.width !== chart.plot.width || size.height !== chart.plot.height) chart.plot.setSize(size);
    });
    chart.observer.observe(holder);
    // Its colours come from the page's; a switch between light and dark draws it anew.
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      destroyPlot();
      if (app.view.name === "store") renderChart();
    });
  }

  // --- start ----------------------------------------------------------------------------------------

  window.addEventListener("hashchange", () => {
    route();
  });

  watchChartSize();

  if (app.token) {
    signIn(app.token).catch((error) => {
      signOut(error instanceof AuthError ? "Your saved token is no longer accepted." : "Could not sign in: " + error.message);
    });
  } else {
    show("sign-in");
  }
})();
