// stream_guard dashboard: a banner while fake alerts are open, one card per face with its score over
// the last minute, and the log of verdicts and alerts, all fed by the server-sent event stream
// (/events). The video is video.js's.
"use strict";
(function () {
  var TOKEN = new URLSearchParams(location.search).get("token");
  var HISTORY_S = 60, STALE_S = 2, GONE_S = 10, LOG_ROWS = 200;
  var faces = new Map();  // track id -> {card, canvas, verdictEl, scoreEl, history: [[wall, score]], seen}
  var threshold = null;
  var openAlerts = new Map();  // track id -> the alert record that raised it
  window.sgStats = {events: 0, tracks: 0, verdicts: 0, alerts: 0, sources: 0, summary: false};

  function withToken(path) {
    return TOKEN ? path + (path.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(TOKEN) : path;
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(score) { return score === null || score === undefined ? "--" : Number(score).toFixed(2); }

  function card(id) {
    var f = faces.get(id);
    if (f) return f;
    var c = el("div", "face-card uncertain");
    c.dataset.track = id;
    var head = el("div", "head");
    head.appendChild(el("span", "", "#" + id));
    var verdictEl = el("span", "verdict uncertain", "uncertain");
    head.appendChild(verdictEl);
    var scoreEl = el("div", "score", "score --");
    var canvas = el("canvas");
    canvas.width = 300; canvas.height = 60;
    c.appendChild(head); c.appendChild(scoreEl); c.appendChild(canvas);
    document.getElementById("faces").appendChild(c);
    f = {card: c, canvas: canvas, verdictEl: verdictEl, scoreEl: scoreEl, history: [], seen: Date.now()};
    faces.set(id, f);
    updateEmpty();
    return f;
  }
  function updateEmpty() {
    document.getElementById("no-faces").style.display = faces.size ? "none" : "";
  }
  function draw(f) {
    var ctx = f.canvas.getContext("2d"), w = f.canvas.width, h = f.canvas.height;
    ctx.clearRect(0, 0, w, h);
    if (threshold !== null) {
      ctx.strokeStyle = "#555"; ctx.setLineDash([4, 4]); ctx.beginPath();
      ctx.moveTo(0, h - threshold * h); ctx.lineTo(w, h - threshold * h); ctx.stroke(); ctx.setLineDash([]);
    }
    if (!f.history.length) return;
    var end = f.history[f.history.length - 1][0];
    var span = Math.min(HISTORY_S, Math.max(10, end - f.history[0][0]));  // the last minute, less while young
    ctx.strokeStyle = "#5dade2"; ctx.lineWidth = 2; ctx.beginPath();
    f.history.forEach(function (p, i) {
      var x = w - (end - p[0]) / span * w, y = h - p[1] * (h - 4) - 2;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  function onFace(r) {
    var f = card(r.track_id), kind = r.not_judged ? "not-judged" : r.verdict;
    f.seen = Date.now();
    f.card.className = "face-card " + kind + (openAlerts.has(r.track_id) ? " alerting" : "");
    f.verdictEl.className = "verdict " + kind;
    f.verdictEl.textContent = r.not_judged ? r.not_judged + (r.score === null || r.score === undefined ? "" :
                                                             ", was " + r.verdict) : r.verdict;
    f.scoreEl.textContent = "score " + fmt(r.score);
    if (r.score !== null && r.score !== undefined && r.type === "track") {
      f.history.push([r.wall_time, r.score]);
      while (f.history.length && f.history[0][0] < r.wall_time - HISTORY_S) f.history.shift();
    }
    draw(f);
  }
  function logRow(cells, cls) {
    var tr = el("tr", cls || "");
    cells.forEach(function (c) { tr.appendChild(el("td", "", c)); });
    var body = document.getElementById("log-body");
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > LOG_ROWS) body.deleteRow(body.rows.length - 1);
  }
  function clearFaces() {
    faces.forEach(function (f) { f.card.remove(); });
    faces.clear();
    updateEmpty();
  }
  function showAlerts() {
    var banner = document.getElementById("alerts");
    banner.textContent = "";
    openAlerts.forEach(function (a, id) {
      banner.appendChild(el("div", "", "ALERT: face #" + id + " looks fake (score " + fmt(a.score) + ", at " +
                                       Number(a.stream_time_s).toFixed(1) + " s)"));
    });
    banner.style.display = openAlerts.size ? "" : "none";
    faces.forEach(function (f, id) { f.card.classList.toggle("alerting", openAlerts.has(id)); });
  }
  function onAlert(r) {
    window.sgStats.alerts++;
    if (r.alert === "fake") openAlerts.set(r.track_id, r); else openAlerts.delete(r.track_id);
    logRow([Number(r.stream_time_s).toFixed(1) + " s", "#" + r.track_id,
            r.alert === "fake" ? "ALERT raised" : "alert cleared (" + r.reason.replace(/_/g, " ") + ")",
            fmt(r.score)], r.alert === "fake" ? "alert" : "info");
    showAlerts();
  }
  function onRecord(r) {
    window.sgStats.events++;
    if (r.type === "track") { window.sgStats.tracks++; onFace(r); }
    else if (r.type === "verdict") {
      window.sgStats.verdicts++; onFace(r);
      logRow([Number(r.stream_time_s).toFixed(1) + " s", "#" + r.track_id, r.verdict, fmt(r.score)], r.verdict);
    } else if (r.type === "alert") {
      onAlert(r);
    } else if (r.type === "source") {
      window.sgStats.sources++;
      if (r.state !== "connected") clearFaces();
      logRow([new Date(r.wall_time * 1000).toLocaleTimeString(), "source", r.state, r.detail || ""], "info");
    } else if (r.type === "summary") {
      window.sgStats.summary = true;
      ended = r;
      if (lastStatus) showStatus(lastStatus);
      logRow([new Date(r.wall_time * 1000).toLocaleTimeString(), "run", "ended",
              r.frames_processed + " frames"], "info");
    }
  }
  function tick() {
    var now = Date.now();
    faces.forEach(function (f, id) {
      var age = (now - f.seen) / 1000;
      if (age > GONE_S) { f.card.remove(); faces.delete(id); }
      else f.card.classList.toggle("stale", age > STALE_S);
    });
    updateEmpty();
  }
  // the last status polled; once the run's summary has come, its state is "ended" and its frame count the
  // summary's (the server stops with the run: no later status comes)
  var lastStatus = null, ended = null;
  function showStatus(s) {
    lastStatus = s;
    threshold = s.threshold;
    var box = document.getElementById("status");
    box.textContent = "";
    [["source", s.source], ["state", ended ? "ended" : s.state], ["size", s.width + "x" + s.height],
     ["fps", s.fps.toFixed(1)], ["latency", s.latency_ms === null ? "--" : s.latency_ms.toFixed(1) + " ms"],
     ["frames", ended ? ended.frames_processed : s.frames], ["dropped", ended ? ended.frames_dropped : s.dropped],
     ["model", s.model + " " + s.model_version],
     ["threshold", s.threshold.toFixed(3) + (s.threshold_name ? " (" + s.threshold_name + ")" : "")]
    ].forEach(function (kv) {
      var span = el("span", "", kv[0] + " ");
      span.appendChild(el("b", "", String(kv[1])));
      if (kv[0] === "model") span.title = "model_sha256 " + s.model_sha256 + " (stream_guard " + s.stream_guard + ")";
      box.appendChild(span);
    });
    if (!s.trained) box.appendChild(el("span", "untrained", "UNTRAINED model: scores are meaningless"));
  }
  function status() {
    if (ended) return;
    fetch(withToken("/api/status")).then(function (r) { return r.json(); }).then(showStatus)
      .catch(function () { /* the run has ended or the network is down: keep the last status */ });
  }

  function seed() {  // the faces in view and their last minute, before live events take over
    fetch(withToken("/api/tracks")).then(function (r) { return r.json(); }).then(function (d) {
      d.tracks.forEach(function (t) {
        var f = card(t.track_id);
        if (!f.history.length) f.history = t.history.slice();
        onFace({type: "seed", track_id: t.track_id, verdict: t.verdict, score: t.score, not_judged: t.not_judged});
      });
    }).catch(function () {});
  }
  // A face too small or cut off by the frame's edge is tracked but not judged, so no event carries it: the
  // polled list of faces keeps its card, saying so, instead of a stale "uncertain".
  function pollUnjudged() {
    if (ended) return;
    fetch(withToken("/api/tracks")).then(function (r) { return r.json(); }).then(function (d) {
      d.tracks.forEach(function (t) {
        var f = faces.get(t.track_id);
        if (t.not_judged || (f && f.card.classList.contains("not-judged")))
          onFace({type: "seed", track_id: t.track_id, verdict: t.verdict, score: t.score, not_judged: t.not_judged});
      });
    }).catch(function () {});
  }

  seed();
  var source = new EventSource(withToken("/events"));
  source.onmessage = function (m) { onRecord(JSON.parse(m.data)); };
  status();
  setInterval(status, 1000);
  setInterval(pollUnjudged, 1000);
  setInterval(tick, 500);
})();
