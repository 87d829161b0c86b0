// stream_guard OBS overlay: a box and "#id verdict score" per face, drawn from the event stream
// (/events) over a transparent page. Boxes come in source pixels and are scaled to the page.
"use strict";
(function () {
  var TOKEN = new URLSearchParams(location.search).get("token");
  var boxes = new Map();  // track id -> {el, label, box, seen, interval}
  var size = null;        // [width, height] of the stream
  var layer = document.getElementById("boxes");
  window.sgOverlay = {events: 0};

  function withToken(path) {
    return TOKEN ? path + (path.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(TOKEN) : path;
  }
  // A face that fills the frame has a box beyond it: the box is drawn within the page, and its label inside
  // it where there is no room above (a streamer close to the camera).
  function place(b) {
    if (!size) return;
    var w = window.innerWidth, h = window.innerHeight, sx = w / size[0], sy = h / size[1], r = b.box;
    var left = Math.max(0, r[0] * sx), top = Math.max(0, r[1] * sy);
    b.el.style.left = left + "px"; b.el.style.top = top + "px";
    b.el.style.width = Math.max(1, Math.min(w, r[2] * sx) - left) + "px";
    b.el.style.height = Math.max(1, Math.min(h, r[3] * sy) - top) + "px";
    b.el.classList.toggle("label-inside", top < b.label.offsetHeight);
  }
  function remove(id) {
    var b = boxes.get(id);
    if (b) { b.el.remove(); boxes.delete(id); }
  }
  function clear() { Array.from(boxes.keys()).forEach(remove); }
  // as the video's labels: "real 0.31", "cut off, was real 0.31", "too small" (never judged)
  function labelText(r) {
    var judged = r.score === null || r.score === undefined ? null : r.verdict + " " + Number(r.score).toFixed(2);
    if (r.not_judged) return r.not_judged + (judged ? ", was " + judged : "");
    return judged || r.verdict + " --";
  }
  function onFace(r) {
    if (r.track_state === "lost") { remove(r.track_id); return; }
    var b = boxes.get(r.track_id), now = Date.now();
    if (!b) {
      var e = document.createElement("div"), label = document.createElement("div");
      label.className = "label";
      e.appendChild(label);
      e.dataset.track = r.track_id;
      layer.appendChild(e);
      b = {el: e, label: label, seen: now, interval: 100};
      boxes.set(r.track_id, b);
    } else {
      b.interval = Math.min(2000, Math.max(50, 0.7 * b.interval + 0.3 * (now - b.seen)));
    }
    b.seen = now;
    b.box = r.box;
    b.el.dataset.box = r.box.join(",");  // source pixels, for checks
    b.el.className = "box " + (r.not_judged ? "not-judged" : r.verdict);
    b.label.textContent = "#" + r.track_id + " " + labelText(r);
    place(b);
  }
  // A face too small or cut off by the frame's edge is tracked but not judged, so no event carries it: the
  // polled list of faces draws it (grey, as on the video), and keeps a face that stops being judged in view.
  function pollUnjudged() {
    fetch(withToken("/api/tracks")).then(function (r) { return r.json(); }).then(function (d) {
      if (!size) return;
      d.tracks.forEach(function (t) {
        if (t.not_judged) onFace(t);
        else if (boxes.has(t.track_id) && boxes.get(t.track_id).el.classList.contains("not-judged")) onFace(t);
      });
    }).catch(function () { /* the run has ended */ });
  }
  function onRecord(r) {
    window.sgOverlay.events++;
    if (r.type === "start") { size = [r.width, r.height]; boxes.forEach(place); }
    else if (r.type === "track" || r.type === "verdict") onFace(r);
    else if (r.type === "summary" || (r.type === "source" && r.state !== "connected")) clear();
  }
  // a face is gone once it misses a few of its usual updates (at least 1 s)
  setInterval(function () {
    var now = Date.now();
    boxes.forEach(function (b, id) { if (now - b.seen > Math.max(1000, 4 * b.interval)) remove(id); });
  }, 200);
  setInterval(pollUnjudged, 250);
  window.addEventListener("resize", function () { boxes.forEach(place); });
  var source = new EventSource(withToken("/events"));
  source.onmessage = function (m) { onRecord(JSON.parse(m.data)); };
})();
