// stream_guard dashboard video: H.264 in fragmented MP4 (/stream.mp4) played through Media Source
// Extensions, kept within a second of live, with the source's sound (/sound.mp4, muted until asked
// for) when the video's response says there is some; MJPEG (/stream.mjpg) where the browser cannot
// play that, or when the page is opened with ?video=mjpeg.
"use strict";
(function () {
  var params = new URLSearchParams(location.search);
  var TOKEN = params.get("token");
  var MAX_LAG_S = 1.0;   // further behind live than this: jump to live (a tab in the background, a slow spell)
  var CATCH_UP_S = 0.3;  // further behind than this: play 10 % fast until within TARGET_LAG_S
  var TARGET_LAG_S = 0.15;
  var KEEP_S = 10;       // seconds of played video kept in the buffer
  var RETRY_MS = 1000;   // after the stream ends (the run restarted its encoder, the network dropped)
  var video = document.getElementById("live-video");
  var img = document.getElementById("stream");
  var soundButton = document.getElementById("sound-toggle");
  window.sgVideo = {mode: "", starts: 0, appended: 0, why: ""};

  function withToken(path) {
    return TOKEN ? path + (path.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(TOKEN) : path;
  }

  function useMjpeg(why) {
    window.sgVideo.mode = "mjpeg";
    soundButton.hidden = true;
    window.sgVideo.why = why;
    video.removeAttribute("src");
    video.style.display = "none";
    img.style.display = "";
    img.src = withToken("/stream.mjpg");
  }

  function joined(chunks) {
    if (chunks.length === 1) return chunks[0];
    var size = chunks.reduce(function (n, c) { return n + c.length; }, 0), out = new Uint8Array(size), at = 0;
    chunks.forEach(function (c) { out.set(c, at); at += c.length; });
    return out;
  }

  function play(response) {
    var type = response.headers.get("Content-Type") || "";
    var soundType = response.headers.get("X-Sound");
    if (!window.MediaSource || !MediaSource.isTypeSupported(type)) {
      response.body.cancel();
      useMjpeg("this browser cannot play " + type);
      return;
    }
    if (soundType && !MediaSource.isTypeSupported(soundType)) soundType = null;  // the video, silent
    var source = new MediaSource(), url = URL.createObjectURL(source), tracks = [], over = false;
    window.sgVideo.mode = "h264";
    window.sgVideo.sound = !!soundType;
    window.sgVideo.starts += 1;
    soundButton.hidden = !soundType;
    video.src = url;

    function finish() {  // once: drop this MediaSource and connect again
      if (over) return;
      over = true;
      tracks.forEach(function (t) { t.reader.cancel().catch(function () {}); });
      setTimeout(connect, RETRY_MS);
    }
    function nearLive() {  // the element's buffered ranges: where every track has data
      var b = video.buffered;
      if (!b.length) return;
      var end = b.end(b.length - 1), lag = end - video.currentTime;
      if (lag > MAX_LAG_S || video.currentTime < b.start(b.length - 1)) {
        video.currentTime = Math.max(b.start(b.length - 1), end - TARGET_LAG_S);
      } else if (lag > CATCH_UP_S) {
        video.playbackRate = 1.1;
      } else if (lag < TARGET_LAG_S) {
        video.playbackRate = 1.0;
      }
      window.sgVideo.lag_s = lag;
      if (video.paused) video.play().catch(function () {});
    }
    function track(type, reader) {  // one SourceBuffer fed from one HTTP stream
      var t = {type: type, reader: reader, pending: [], buffer: null, ended: false};
      t.pump = function () {
        if (t.buffer === null || t.buffer.updating || over) return;
        try {
          if (t.pending.length) {
            var chunk = joined(t.pending);
            t.pending = [];
            t.buffer.appendBuffer(chunk);
          } else if (t.ended) {
            finish();
          } else if (t.buffer.buffered.length && video.currentTime - t.buffer.buffered.start(0) > 2 * KEEP_S) {
            t.buffer.remove(0, video.currentTime - KEEP_S);
          }
        } catch (e) {  // the decoder refused the stream, or the buffer is full: start afresh
          finish();
        }
      };
      (function read() {
        reader.read().then(function (r) {
          if (r.done) { t.ended = true; t.pump(); return; }
          t.pending.push(r.value);
          t.pump();
          read();
        }).catch(finish);
      })();
      tracks.push(t);
      return t;
    }
    function attach(t) {
      t.buffer = source.addSourceBuffer(t.type);
      window.sgVideo.buffers = source.sourceBuffers.length;
      t.buffer.addEventListener("updateend", function () {
        window.sgVideo.appended += 1;
        nearLive();
        t.pump();
      });
      t.buffer.addEventListener("error", finish);
      t.pump();
    }

    track(type, response.body.getReader());
    var sound = soundType && fetch(withToken("/sound.mp4"), {cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      if (over) { r.body.cancel(); return; }
      track(soundType, r.body.getReader());
    });
    if (sound) sound.catch(finish);  // the sound's request failed: start afresh (the next may have none)
    source.addEventListener("sourceopen", function () {
      URL.revokeObjectURL(url);
      // every SourceBuffer must exist before the first data is appended to any of them
      if (!sound) { attach(tracks[0]); return; }
      sound.then(function () { tracks.forEach(attach); }).catch(finish);
    }, {once: true});
  }

  soundButton.addEventListener("click", function () {  // browsers play sound only after a click
    video.muted = !video.muted;
    soundButton.textContent = video.muted ? "Sound on" : "Sound off";
    soundButton.setAttribute("aria-pressed", String(!video.muted));
  });

  function connect() {
    fetch(withToken("/stream.mp4"), {cache: "no-store"}).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      play(response);
    }).catch(function () { setTimeout(connect, RETRY_MS); });
  }

  if (params.get("video") === "mjpeg" || !window.MediaSource) {
    useMjpeg(window.MediaSource ? "asked for" : "this browser has no Media Source Extensions");
  } else {
    img.style.display = "none";
    connect();
  }
})();
