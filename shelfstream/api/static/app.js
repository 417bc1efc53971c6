// shelfstream dashboard: plain JS, no build step, no third-party code.
// The token lives in sessionStorage (gone when the tab closes) and travels only in the Authorization
// header: the live stream is read with fetch() rather than EventSource, which cannot send headers.
"use strict";

(() => {
  const TOKEN_KEY = "shelfstream.token";
  const FEED_MAX = 50;
  const CHART_WINDOWS = 48;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const app = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    stores: new Map(), // store_id -> summary
    alerts: [], // newest first, every store this token sees
    inventory: new Map(), // store_id -> inventory answer
    windows: new Map(), // store_id -> windows, oldest first
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

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  const clock = (ts) => (typeof ts === "string" && ts.length >= 16 ? ts.slice(11, 16) : "");
  const day = (ts) => (typeof ts === "string" ? ts.slice(0, 10) : "");
  const fmt = (n) => (typeof n === "number" ? n.toLocaleString("en") : "0");
  const storeHref = (id) => "#/store/" + encodeURIComponent(id);

  class AuthError extends Error {}

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
      throw new Error(message);
    }
    return response.json();
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
    const [inventory, windows] = await Promise.all([
      api("/v1/stores/" + id + "/inventory").catch((error) => {
        if (error instanceof AuthError) throw error;
        return { store_id: storeId, products: [], missing: error.message };
      }),
      api("/v1/stores/" + id + "/windows?limit=400"),
    ]);
    app.inventory.set(storeId, inventory);
    app.windows.set(storeId, windows.windows);
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
    for (const section of ["sign-in", "overview", "store"]) $(section).hidden = section !== name;
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
      document.title = "Store " + id + " · shelfstream";
      renderCards();
      renderStock();
      renderChart();
      renderFeed($("store-alerts"), app.alerts.filter((a) => a.store_id === id), false);
      renderAtRisk();
      renderTrucks();
      renderDeliveries();
    }
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
          el("td", {}, s.last_anomaly ? clock(s.last_anomaly.ts) + " " + (s.last_anomaly.explanation || "") : "—"),
          el("td", {}, atRiskText(s.at_risk || [])),
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
        el("time", { datetime: alert.ts, text: day(alert.ts) + " " + clock(alert.ts) }),
        withStore ? el("a", { href: storeHref(alert.store_id), text: alert.store_id }) : null,
        alert.kind === "anomaly" ? el("span", { class: "muted", text: "severity " + alert.severity }) : null,
      ),
      el("p", { class: "text", text: alertText(alert) }),
    );
  }

  function renderFeed(list, alerts, withStore) {
    list.replaceChildren(...alerts.slice(0, FEED_MAX).map((a) => alertItem(a, withStore)));
    list.nextElementSibling.hidden = alerts.length > 0;
  }

  function atRiskText(items) {
    if (!items.length) return "—";
    const first = items[0];
    return items.length + " (" + first.product_id + " empty at " + clock(first.expected_stockout_at) + ")";
  }

  function renderAtRisk() {
    const items = summaryOf(app.view.store).at_risk || [];
    $("at-risk-body").replaceChildren(
      ...items.map((i) =>
        el(
          "tr",
          {},
          el("th", { scope: "row", text: i.product_id }),
          el("td", {}, el("time", { datetime: i.expected_stockout_at, text: day(i.expected_stockout_at) + " " + clock(i.expected_stockout_at) })),
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

  function renderStock() {
    const inventory = app.inventory.get(app.view.store) || { products: [] };
    const label = { out: "out of stock", low: "low", ok: "ok" };
    $("stock-body").replaceChildren(
      ...inventory.products.map((p) =>
        el(
          "tr",
          {},
          el("th", { scope: "row" }, p.name ? p.product_id + " · " + p.name : p.product_id),
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
          el("td", {}, el("time", { datetime: d.ts, text: clock(d.ts) })),
          el("td", { text: d.truck_id || "" }),
          el("td", { text: d.product_id }),
          el("td", { class: "num", text: fmt(d.quantity) }),
        ),
      ),
    );
    $("deliveries-empty").hidden = rows.length > 0;
  }

  // --- the chart: inline SVG, drawn here --------------------------------------------------------------

  function renderChart() {
    const id = app.view.store;
    const all = (app.windows.get(id) || []).filter((w) => w.kind === "tumbling");
    const data = all.slice(-CHART_WINDOWS);
    const anomalyEnds = new Set(
      app.alerts.filter((a) => a.store_id === id && a.kind === "anomaly").map((a) => a.window_end),
    );
    const flagged = (w) => (w.anomalies && w.anomalies.length > 0) || anomalyEnds.has(w.window_end);
    const holder = $("chart");
    // Drawn at the size it is shown, so its labels stay readable on a phone.
    const W = Math.max(300, Math.round(holder.clientWidth || 640));
    const H = W < 500 ? 200 : 240;
    const pad = { left: 40, right: 14, top: 12, bottom: 28 };
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-svg-title chart-svg-desc" });
    const title = svg("title", { id: "chart-svg-title" });
    title.textContent = "Sales and refunds per 15-minute window, store " + id;
    const desc = svg("desc", { id: "chart-svg-desc" });
    chart.append(title, desc);
    if (!data.length) {
      desc.textContent = "No closed windows yet.";
      const t = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" });
      t.textContent = "No closed windows yet: the first appears once 15 minutes of store time have passed.";
      chart.append(t);
      holder.replaceChildren(chart);
      $("chart-table").replaceChildren();
      return;
    }
    // The detector's expected range of sales for each window (once it has learned the store): a band.
    const range = (w) => (w.expected && Array.isArray(w.expected.sales) ? w.expected.sales : null);
    const top = Math.max(1, ...data.map((w) => Math.max(w.sales || 0, w.refunds || 0, (range(w) || [0, 0])[1])));
    const x = (i) => pad.left + (data.length === 1 ? (W - pad.left - pad.right) / 2 : (i * (W - pad.left - pad.right)) / (data.length - 1));
    const y = (v) => H - pad.bottom - (v / top) * (H - pad.top - pad.bottom);
    chart.append(svg("line", { class: "axis", x1: pad.left, y1: H - pad.bottom, x2: W - pad.right, y2: H - pad.bottom }));
    for (const v of [0, Math.round(top / 2), top]) {
      chart.append(svg("line", { class: "axis", x1: pad.left, y1: y(v), x2: W - pad.right, y2: y(v), "stroke-opacity": 0.4 }));
      const label = svg("text", { class: "tick", x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = String(v);
      chart.append(label);
    }
    const ticks = [...new Set([0, Math.floor((data.length - 1) / 2), data.length - 1])];
    for (const i of ticks) {
      const anchor = data.length > 1 && i === 0 ? "start" : data.length > 1 && i === data.length - 1 ? "end" : "middle";
      const label = svg("text", { class: "tick", x: x(i), y: H - 8, "text-anchor": anchor });
      label.textContent = clock(data[i].window_end);
      chart.append(label);
    }
    // One band per run of consecutive windows that have a range (none before the detector's second day).
    let run = [];
    const bands = [];
    data.forEach((w, i) => {
      if (range(w)) run.push(i);
      if ((!range(w) || i === data.length - 1) && run.length) {
        bands.push(run);
        run = [];
      }
    });
    for (const idx of bands) {
      const upper = idx.map((i) => `${x(i).toFixed(1)},${y(range(data[i])[1]).toFixed(1)}`);
      const lower = idx.slice().reverse().map((i) => `${x(i).toFixed(1)},${y(range(data[i])[0]).toFixed(1)}`);
      const band = svg("polygon", { class: "band", points: upper.concat(lower).join(" ") });
      const tip = svg("title", {});
      tip.textContent = "Expected range of sales (the store's own normal at that local time)";
      band.append(tip);
      chart.append(band);
    }
    const line = (key, cls) =>
      svg("polyline", { class: cls, points: data.map((w, i) => `${x(i).toFixed(1)},${y(w[key] || 0).toFixed(1)}`).join(" ") });
    chart.append(line("refunds", "refunds"), line("sales", "sales"));
    let marked = 0;
    data.forEach((w, i) => {
      if (!flagged(w)) return;
      marked += 1;
      const dot = svg("circle", { class: "marker", cx: x(i), cy: y(w.sales || 0), r: 6 });
      const tip = svg("title", {});
      tip.textContent = "Anomaly in the window ending " + clock(w.window_end) + ((w.anomalies || []).length ? ": " + w.anomalies.join(", ") : "");
      dot.append(tip);
      chart.append(dot);
    });
    const last = data[data.length - 1];
    desc.textContent =
      `${data.length} windows from ${clock(data[0].window_end)} to ${clock(last.window_end)}; ` +
      `latest ${last.sales} sales and ${last.refunds} refunds` +
      (range(last) ? ` (expected ${range(last)[0]}-${range(last)[1]})` : "") +
      `; ${marked} marked as anomalies.`;
    holder.replaceChildren(chart);
    $("chart-table").replaceChildren(
      ...data.slice().reverse().map((w) =>
        el(
          "tr",
          {},
          el("td", { text: day(w.window_end) + " " + clock(w.window_end) }),
          el("td", { class: "num", text: fmt(w.sales) }),
          el("td", { class: "num", text: fmt(w.refunds) }),
          el("td", { text: flagged(w) ? (w.anomalies || []).join(", ") || "anomaly" : "" }),
        ),
      ),
    );
  }

  // --- start ----------------------------------------------------------------------------------------

  window.addEventListener("hashchange", () => {
    route();
  });

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (app.view.name === "store") renderChart();
    }, 150);
  });

  if (app.token) {
    signIn(app.token).catch((error) => {
      signOut(error instanceof AuthError ? "Your saved token is no longer accepted." : "Could not sign in: " + error.message);
    });
  } else {
    show("sign-in");
  }
})();
