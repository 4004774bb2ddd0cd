// Live updates for the status page: one EventSource on /v1/events (the cookie
// authenticates it), rows and fields updated in place on "state" events; charts of
// each plugin's requests/s and latency polled from /v1/rates.
(function () {
  "use strict";

  var live = document.getElementById("live");

  function human(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    function pad(n) { return (n < 10 ? "0" : "") + n; }
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 48 * 3600) return Math.floor(s / 3600) + "h" + pad(Math.floor(s / 60) % 60) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor(s / 3600) % 24) + "h";
  }

  function serving(st) {
    return !!st.container && (st.state === "healthy" || st.state === "unhealthy");
  }

  function tickUptimes() {
    var now = Date.now();
    document.querySelectorAll("[data-field=uptime]").forEach(function (el) {
      var started = el.getAttribute("data-started");
      el.textContent = started ? human(now - Date.parse(started)) : "—";
    });
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  // stamp and seconds print like the server does: 2006-01-02 15:04:05, 1.588s.
  function stamp(iso) {
    if (!iso || /^0001-/.test(iso)) return "—";
    var d = new Date(iso);
    return d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + " " +
      pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }

  function seconds(ms) {
    ms = Math.round(ms);
    return ms < 1000 ? ms + "ms" : (ms / 1000).toFixed(3).replace(/\.?0+$/, "") + "s";
  }

  function short(s, n) {
    s = (s || "").replace(/^sha256:/, "");
    return s.length > n ? s.slice(0, n) : s;
  }

  function set(scope, field, text, title) {
    scope.querySelectorAll("[data-field=" + field + "]").forEach(function (el) {
      el.textContent = text;
      if (title !== undefined) el.title = title;
    });
  }

  function apply(scope, st) {
    scope.querySelectorAll("[data-field=state]").forEach(function (el) {
      el.textContent = st.state;
      el.className = "state state-" + st.state;
    });
    scope.querySelectorAll("[data-field=link]").forEach(function (el) {
      el.textContent = st.name;
      el.href = "/plugins/" + encodeURIComponent(st.name);
    });
    scope.querySelectorAll("[data-field=uptime]").forEach(function (el) {
      el.setAttribute("data-started", serving(st) ? st.started_at : "");
    });
    set(scope, "generation", st.generation ? String(st.generation) : "—");
    set(scope, "restarts", String(st.restarts));
    set(scope, "image", st.image || "—", st.image_id || "");
    set(scope, "image_id", short(st.image_id, 12));
    set(scope, "container", short(st.container, 12));
    set(scope, "endpoint", st.endpoint || "");
    set(scope, "snapshot", short(st.snapshot, 12));
    set(scope, "last_change", st.last_change || "—");
    set(scope, "last_exit", st.last_exit || "—");
    set(scope, "last_error", st.last_error || "", st.last_error || "");
    set(scope, "started_at", stamp(st.started_at));
    set(scope, "took", st.took_ms > 0 ? seconds(st.took_ms) : "—");
    set(scope, "ready", readyText(st));
    set(scope, "ready_of", readyText(st));
    scope.querySelectorAll("[data-field=instances]").forEach(function (el) { dots(el, st); });
    scope.querySelectorAll("[data-field=instance_rows]").forEach(function (el) { instanceRows(el, st); });
  }

  // Instances: the dots of a Ready cell, the rows of the plugin page's table (the
  // server renders the same markup: parts.html, plugin.html).
  function readyText(st) {
    return st.replicas ? st.ready + "/" + st.replicas : "—";
  }

  function instanceTitle(is) {
    var parts = ["replica " + is.replica + ": " + is.state];
    if (is.container) parts.push(short(is.container, 12));
    if (is.endpoint) parts.push(is.endpoint);
    parts.push(is.restarts + " restarts");
    if (is.last_exit) parts.push("last exit: " + is.last_exit);
    return parts.join(" · ");
  }

  function dots(el, st) {
    el.textContent = "";
    (st.instances || []).forEach(function (is) {
      var i = document.createElement("i");
      i.className = "dot dot-" + is.state;
      i.title = instanceTitle(is);
      el.appendChild(i);
    });
  }

  function cell(tr, cls, text) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function instanceRows(tbody, st) {
    tbody.textContent = "";
    var list = st.instances || [];
    if (!list.length) {
      var empty = document.createElement("tr");
      empty.className = "empty";
      cell(empty, "", "No instance: the plugin has no serving generation.").colSpan = 6;
      tbody.appendChild(empty);
      return;
    }
    list.forEach(function (is) {
      var tr = document.createElement("tr");
      cell(tr, "num", String(is.replica));
      var pill = document.createElement("span");
      pill.className = "state state-" + is.state;
      pill.textContent = is.state;
      cell(tr, "").appendChild(pill);
      var c = cell(tr, "");
      var code = document.createElement("code");
      code.textContent = short(is.container, 12) || "—";
      code.title = is.container || "";
      var name = document.createElement("span");
      name.className = "muted";
      name.textContent = is.name || "";
      c.append(code, " ", name);
      var ep = document.createElement("code");
      ep.textContent = is.endpoint || "—";
      cell(tr, "").appendChild(ep);
      cell(tr, "num", String(is.restarts));
      cell(tr, "", is.last_exit || "—");
      tbody.appendChild(tr);
    });
  }

  function findScopes(name) {
    var found = [];
    document.querySelectorAll("[data-plugin]").forEach(function (el) {
      if (el.getAttribute("data-plugin") === name) found.push(el);
    });
    return found;
  }

  var table = document.getElementById("plugins");

  function update(st, flash) {
    var scopes = findScopes(st.name);
    if (!scopes.length && table) {
      var tpl = document.getElementById("row-template");
      var row = tpl.content.firstElementChild.cloneNode(true);
      row.setAttribute("data-plugin", st.name);
      var empty = table.querySelector("tr.empty");
      if (empty) empty.remove();
      table.tBodies[0].appendChild(row);
      scopes = [row];
      drawCharts();
    }
    scopes.forEach(function (scope) {
      apply(scope, st);
      if (flash && scope.tagName === "TR") {
        scope.classList.remove("flash");
        void scope.offsetWidth;
        scope.classList.add("flash");
      }
    });
    summarize();
  }

  function summarize() {
    var el = document.getElementById("summary");
    if (!el || !table) return;
    var rows = table.querySelectorAll("tbody tr[data-plugin]");
    var healthy = table.querySelectorAll("tbody tr[data-plugin] .state-healthy").length;
    el.textContent = healthy + " of " + rows.length + " healthy";
  }

  // refresh re-reads every status: after (re)connecting, events may have been missed.
  function refresh() {
    fetch("/v1/plugins", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (list) {
        var names = {};
        list.forEach(function (st) { names[st.name] = true; update(st, false); });
        if (table) {
          table.querySelectorAll("tbody tr[data-plugin]").forEach(function (tr) {
            if (!names[tr.getAttribute("data-plugin")]) tr.remove();
          });
          summarize();
        }
      })
      .catch(function () {});
  }

  var eventList = document.getElementById("events");

  function describe(ev) {
    switch (ev.type) {
      case "state": return ev.status ? ev.status.state + (ev.status.generation ? " (generation " + ev.status.generation + ")" : "") : "";
      case "replaced": return (ev.reason || "") + " in " + ((ev.duration_ms || 0) / 1e3).toFixed(1) + "s";
      case "replacing": case "crash": return ev.reason || "";
      case "restart": return "started again after a crash";
      case "pull_started": return "pulling " + ev.image + (ev.reason ? " (" + ev.reason + ")" : "");
      case "pull_done": return "pulled " + ev.image + " " + (ev.digest || "").slice(0, 19) + " in " + ((ev.duration_ms || 0) / 1e3).toFixed(1) + "s";
      case "pull_failed": return "pull of " + ev.image + " failed: " + (ev.message || "");
      default: return ev.message || ev.reason || "";
    }
  }

  var lastState = {};

  function note(ev) {
    if (!eventList) return;
    if (ev.type === "state" && ev.status) {
      // A status update that changed neither state nor generation is not news.
      var key = ev.status.state + "/" + ev.status.generation;
      if (lastState[ev.plugin] === key) return;
      lastState[ev.plugin] = key;
    }
    var none = document.getElementById("no-events");
    if (none) none.remove();
    var li = document.createElement("li");
    var t = document.createElement("span");
    t.className = "t";
    var d = new Date(ev.time);
    t.textContent = [d.getHours(), d.getMinutes(), d.getSeconds()].map(pad2).join(":");
    var bad = ev.type === "crash" || ev.type === "replace_failed" || ev.type === "pull_failed" || (ev.type === "reload" && !ev.ok) ||
      (ev.type === "state" && ev.status && ev.status.state === "failed");
    var k = document.createElement("span");
    k.className = "k" + (bad ? " bad" : "");
    k.textContent = ev.type;
    var p = document.createElement("span");
    p.className = "p";
    p.textContent = ev.plugin || "";
    var m = document.createElement("span");
    m.textContent = describe(ev);
    li.append(t, k, p, m);
    eventList.prepend(li);
    while (eventList.children.length > 100) eventList.lastElementChild.remove();
  }

  if (live && window.EventSource) {
    var es = new EventSource("/v1/events");
    es.onopen = function () {
      live.textContent = "live";
      live.className = "live on";
      refresh();
    };
    es.onerror = function () {
      live.textContent = "reconnecting…";
      live.className = "live off";
    };
    es.onmessage = function (m) {
      var ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (ev.type === "state" && ev.status) update(ev.status, true);
      if (ev.type !== "probe_failed") note(ev);
    };
  }

  // The plugin page: follow the log and offer a restart.
  var logs = document.getElementById("logs");
  if (logs && logs.getAttribute("data-follow") && window.fetch && window.TextDecoder) {
    var name = logs.getAttribute("data-name");
    logs.scrollTop = logs.scrollHeight;
    fetch("/v1/plugins/" + encodeURIComponent(name) + "/logs?follow=1&tail=0", { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok || !r.body) return;
        var reader = r.body.getReader();
        var dec = new TextDecoder();
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) return;
            var atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
            logs.appendChild(document.createTextNode(dec.decode(chunk.value, { stream: true })));
            if (logs.textContent.length > 400000) logs.textContent = logs.textContent.slice(-200000);
            if (atBottom) logs.scrollTop = logs.scrollHeight;
            return pump();
          });
        }
        return pump();
      })
      .catch(function () {});
  }

  var restart = document.getElementById("restart");
  if (restart) {
    restart.addEventListener("click", function () {
      var out = document.getElementById("action-result");
      restart.disabled = true;
      fetch("/v1/plugins/" + encodeURIComponent(restart.getAttribute("data-name")) + "/restart", { method: "POST", credentials: "same-origin" })
        .then(function (r) { return r.json().then(function (b) { return [r.ok, b]; }); })
        .then(function (res) { out.textContent = res[0] ? "restart requested" : (res[1].detail || "restart refused"); })
        .catch(function (e) { out.textContent = String(e); })
        .then(function () { restart.disabled = false; });
    });
  }

  // Charts: requests/s, 5xx and latency per second, from GET /v1/rates (the runner's
  // own counts of the last 5 minutes). The first poll reads the whole window, the next
  // ones only the seconds after the last answer's end.
  var SVG = "http://www.w3.org/2000/svg";
  var WINDOW = 300, MIN_SPAN = 60, POLL_MS = 2000;
  var rates = {};   // plugin → {start, requests, errors, p50, p99}: one value per second
  var ratesEnd = 0; // the last second read
  var hover = null; // the second under the pointer on the big chart

  function chartsOnPage() { return document.querySelectorAll("svg[data-chart]"); }

  function pluginOf(el) {
    var s = el.closest("[data-plugin]");
    return s ? s.getAttribute("data-plugin") : null;
  }

  function merge(p) {
    var have = rates[p.plugin];
    if (!have) {
      have = rates[p.plugin] = { start: p.start, requests: [], errors: [], p50: [], p99: [] };
    }
    // Seconds between what we had and what came are seconds without requests.
    for (var s = have.start + have.requests.length; s < p.start; s++) push(have, 0, 0, 0, 0);
    for (var i = 0; i < p.requests.length; i++) push(have, p.requests[i], p.errors[i], p.p50_ms[i], p.p99_ms[i]);
  }

  function push(r, n, e, p50, p99) {
    r.requests.push(n); r.errors.push(e); r.p50.push(p50); r.p99.push(p99);
  }

  function trim(end) {
    Object.keys(rates).forEach(function (k) {
      var r = rates[k], drop = Math.max(0, end - WINDOW + 1 - r.start);
      if (drop > 0) {
        ["requests", "errors", "p50", "p99"].forEach(function (f) { r[f] = r[f].slice(drop); });
        r.start += drop;
      }
    });
  }

  // at is plugin's value of field at second sec (0 outside what is known).
  function at(r, field, sec) {
    if (!r) return 0;
    var i = sec - r.start;
    return i >= 0 && i < r[field].length ? r[field][i] : 0;
  }

  function span(names) {
    var first = ratesEnd;
    names.forEach(function (n) { if (rates[n]) first = Math.min(first, rates[n].start); });
    return Math.min(WINDOW, Math.max(MIN_SPAN, ratesEnd - first + 1));
  }

  function rangeText(sp) { return sp < 120 ? "last " + sp + " s" : "last " + Math.round(sp / 60) + " min"; }

  // nice rounds a maximum up to 1, 2 or 5 × 10^k.
  function nice(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  function rps(n) { return n >= 10000 ? (n / 1000).toFixed(1) + "k" : String(Math.round(n)); }

  function msText(v) {
    if (!(v > 0)) return "—";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 10) return v.toFixed(1) + " ms";
    if (v < 1000) return Math.round(v) + " ms";
    return (v / 1000).toFixed(2) + " s";
  }

  function node(parent, tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }

  // view is r over the seconds [from, from+sp) in buckets of size seconds: requests
  // and 5xx per second on average, the slowest second's latencies, and whether any
  // request came (has).
  function view(r, from, sp, size) {
    var v = { from: from, size: size, requests: [], errors: [], p50: [], p99: [], has: [] };
    for (var b = 0; b * size < sp; b++) {
      var n = 0, e = 0, p50 = 0, p99 = 0;
      for (var s = from + b * size; s < Math.min(from + sp, from + (b + 1) * size); s++) {
        n += at(r, "requests", s); e += at(r, "errors", s);
        p50 = Math.max(p50, at(r, "p50", s)); p99 = Math.max(p99, at(r, "p99", s));
      }
      v.requests.push(n / size); v.errors.push(e / size); v.p50.push(p50); v.p99.push(p99); v.has.push(n > 0);
    }
    return v;
  }

  function xOf(v, i, box) {
    var last = v.requests.length - 1;
    return box.x + (last ? (i / last) * box.w : box.w);
  }

  // path is vals as SVG path data in box, scaled to top; area closes it down to the
  // baseline; with gaps, buckets without requests break the line.
  function path(v, vals, box, top, area, gaps) {
    var d = "", pen = false, x, base = (box.y + box.h).toFixed(1);
    for (var i = 0; i < vals.length; i++) {
      if (gaps && !v.has[i]) { pen = false; continue; }
      x = xOf(v, i, box).toFixed(1);
      var y = (box.y + box.h - Math.min(1, vals[i] / top) * box.h).toFixed(1);
      d += (pen ? "L" : area ? "M" + x + "," + base + "L" : "M") + x + "," + y;
      pen = true;
    }
    if (area && pen) d += "L" + x + "," + base + "Z";
    return d;
  }

  function maxOf(vals) { return Math.max.apply(null, [0].concat(vals)); }

  function drawSpark(svg, name, sp) {
    var w = svg.clientWidth, h = svg.clientHeight, r = rates[name];
    svg.textContent = "";
    if (!w || !h) return;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    node(svg, "line", { x1: 0, x2: w, y1: h - 0.5, y2: h - 0.5, "class": "axis" });
    var row = svg.closest("tr") || svg.parentNode;
    var now = row.querySelector("[data-field=rps]"), p99 = row.querySelector("[data-field=p99]");
    if (!r) {
      if (now) now.textContent = "no requests";
      if (p99) p99.textContent = "";
      return;
    }
    // About 2 px a point: buckets of a few seconds read better than 300 spikes.
    var v = view(r, ratesEnd - sp + 1, sp, Math.max(1, Math.ceil(sp / (w / 2)))), box = { x: 0.5, y: 2, w: w - 1, h: h - 3 };
    var top = nice(maxOf(v.requests) * 1.1);
    node(svg, "path", { d: path(v, v.requests, box, top, true, false), "class": "area-rps" });
    node(svg, "path", { d: path(v, v.errors, box, top, true, false), "class": "area-err" });
    node(svg, "path", { d: path(v, v.p99, box, nice(maxOf(v.p99) * 1.1), false, true), "class": "line-p99" });
    // The numbers are the last finished second's.
    var last = at(r, "requests", ratesEnd);
    if (now) now.textContent = rps(last) + "/s";
    if (p99) p99.textContent = last ? "p99 " + msText(at(r, "p99", ratesEnd)) : "";
  }

  function clockOf(sec) {
    var d = new Date(sec * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map(pad2).join(":");
  }

  function drawBig(svg, name, sp) {
    var w = svg.clientWidth, h = svg.clientHeight, r = rates[name];
    svg.textContent = "";
    if (!w || !h) return;
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    var from = ratesEnd - sp + 1, v = view(r, from, sp, 1);
    var box = { x: 52, y: 10, w: w - 52 - 64, h: h - 10 - 26 };
    var top = nice(maxOf(v.requests) * 1.1), lat = nice(maxOf(v.p99) * 1.1);
    for (var k = 0; k <= 4; k++) {
      var y = box.y + box.h - (k / 4) * box.h;
      node(svg, "line", { x1: box.x, x2: box.x + box.w, y1: y, y2: y, "class": k ? "grid" : "axis" });
      node(svg, "text", { x: box.x - 8, y: y + 4, "class": "tick tick-rps" }, rps((top * k) / 4) + (k === 4 ? "/s" : ""));
      node(svg, "text", { x: box.x + box.w + 8, y: y + 4, "class": "tick tick-lat" }, k ? msText((lat * k) / 4) : "0 ms");
    }
    var every = sp <= 60 ? 10 : sp <= 120 ? 30 : 60;
    for (var t = 0; t < sp; t += every) {
      var x = xOf(v, sp - 1 - t, box);
      node(svg, "line", { x1: x, x2: x, y1: box.y + box.h, y2: box.y + box.h + 4, "class": "axis" });
      node(svg, "text", { x: x, y: box.y + box.h + 17, "class": "tick tick-x" }, t === 0 ? "now" : every < 60 ? "−" + t + "s" : "−" + t / 60 + "m");
    }
    if (!r) {
      node(svg, "text", { x: box.x + box.w / 2, y: box.y + box.h / 2, "class": "nodata" }, "No requests yet");
      return;
    }
    node(svg, "path", { d: path(v, v.requests, box, top, true, false), "class": "area-rps" });
    node(svg, "path", { d: path(v, v.errors, box, top, true, false), "class": "area-err" });
    node(svg, "path", { d: path(v, v.p50, box, lat, false, true), "class": "line-p50" });
    node(svg, "path", { d: path(v, v.p99, box, lat, false, true), "class": "line-p99" });
    if (hover !== null && hover >= from && hover <= ratesEnd) {
      var hx = xOf(v, hover - from, box);
      node(svg, "line", { x1: hx, x2: hx, y1: box.y, y2: box.y + box.h, "class": "cursor" });
    }
    svg.onmousemove = function (ev) {
      var f = (ev.clientX - svg.getBoundingClientRect().left - box.x) / box.w;
      hover = f < 0 || f > 1 ? null : from + Math.round(f * (sp - 1));
      readout(name);
      drawBig(svg, name, sp);
    };
    svg.onmouseleave = function () { hover = null; readout(name); drawBig(svg, name, sp); };
  }

  function readout(name) {
    var el = document.getElementById("readout"), r = rates[name];
    if (!el) return;
    var sec = hover !== null ? hover : ratesEnd;
    if (!r) { el.textContent = "No requests to " + name + " in the last 5 minutes."; return; }
    var n = at(r, "requests", sec);
    el.textContent = clockOf(sec) + (hover === null ? " (the last second)" : "") + ": " + rps(n) + " requests, " +
      at(r, "errors", sec) + " 5xx" + (n ? ", p50 " + msText(at(r, "p50", sec)) + ", p99 " + msText(at(r, "p99", sec)) : "") +
      (hover === null ? "; hover for another second" : "");
  }

  function drawCharts() {
    var list = chartsOnPage();
    if (!list.length || !ratesEnd) return;
    var names = [];
    list.forEach(function (svg) { var n = pluginOf(svg); if (n) names.push(n); });
    var sp = span(names);
    document.querySelectorAll("[data-field=range]").forEach(function (el) { el.textContent = rangeText(sp); });
    list.forEach(function (svg) {
      var n = pluginOf(svg);
      if (!n) return;
      svg.setAttribute("data-end", String(ratesEnd)); // the last second drawn
      if (svg.getAttribute("data-chart") === "big") { drawBig(svg, n, sp); readout(n); }
      else drawSpark(svg, n, sp);
    });
  }

  function pollRates() {
    var list = chartsOnPage();
    if (!list.length || !window.fetch) return;
    var one = document.getElementById("chart");
    var url = "/v1/rates?since=" + ratesEnd + (one ? "&plugin=" + encodeURIComponent(pluginOf(one)) : "");
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body || body.end < ratesEnd) return;
        body.plugins.forEach(merge);
        ratesEnd = body.end;
        trim(ratesEnd);
        drawCharts();
      })
      .catch(function () {})
      .then(function () { setTimeout(pollRates, document.hidden ? 5 * POLL_MS : POLL_MS); });
  }

  // The page carries the window as it was when rendered: charts drawn at once, then
  // polled for what is new.
  var initial = document.getElementById("rates-data");
  if (initial) {
    try {
      var body = JSON.parse(initial.textContent);
      body.plugins.forEach(merge);
      ratesEnd = body.end;
      drawCharts();
    } catch (e) { /* polled below */ }
  }
  window.addEventListener("resize", drawCharts);
  setTimeout(pollRates, initial ? POLL_MS : 0);

  tickUptimes();
  setInterval(tickUptimes, 1000);
})();
