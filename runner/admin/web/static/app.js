// Live updates for the status page: one EventSource on /v1/events (the cookie
// authenticates it), rows and fields updated in place on "state" events.
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
  }

  function findScope(name) {
    var found = null;
    document.querySelectorAll("[data-plugin]").forEach(function (el) {
      if (el.getAttribute("data-plugin") === name) found = el;
    });
    return found;
  }

  var table = document.getElementById("plugins");

  function update(st, flash) {
    var scope = findScope(st.name);
    if (!scope && table) {
      var tpl = document.getElementById("row-template");
      scope = tpl.content.firstElementChild.cloneNode(true);
      scope.setAttribute("data-plugin", st.name);
      var empty = table.querySelector("tr.empty");
      if (empty) empty.remove();
      table.tBodies[0].appendChild(scope);
    }
    if (!scope) return;
    apply(scope, st);
    if (flash && scope.tagName === "TR") {
      scope.classList.remove("flash");
      void scope.offsetWidth;
      scope.classList.add("flash");
    }
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

  tickUptimes();
  setInterval(tickUptimes, 1000);
})();
