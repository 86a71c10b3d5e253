// Frame-accurate playback for the dashboard, one clock for both places that play: the cut player (the preview with
// its shots, record timecode, J/K/L, frame and shot stepping) and the shot page's A/B compare, where two takes play
// in sync (the first is the clock; the second is pulled back onto it whenever it drifts by half a frame).
(function () {
  "use strict";

  // SMPTE timecode of a frame count: drop frame (";") at 29.97 and 59.94 when the cut counts so.
  function timecode(frames, nominal, drop) {
    if (drop) {
      const dropped = Math.round(nominal / 15);  // 2 at 29.97, 4 at 59.94
      const perMinute = nominal * 60 - dropped, perTen = nominal * 600 - dropped * 9;
      const tens = Math.floor(frames / perTen), rest = frames % perTen;
      frames += dropped * 9 * tens + (rest > dropped ? dropped * Math.floor((rest - dropped) / perMinute) : 0);
    }
    const pad = n => String(n).padStart(2, "0");
    const ff = frames % nominal, s = Math.floor(frames / nominal);
    return [pad(Math.floor(s / 3600) % 24), pad(Math.floor(s / 60) % 60), pad(s % 60)].join(":")
      + (drop ? ";" : ":") + pad(ff);
  }

  // One clock over one or more videos of the same rate: frames, seeking, stepping, J/K/L.
  class Clock {
    constructor(videos, fps, onChange) {
      this.videos = videos; this.lead = videos[0]; this.fps = fps; this.onChange = onChange;
      this.reverse = null; this.speed = 0;
      const tick = () => { this.sync(); onChange(); if (!this.lead.paused || this.reverse) requestAnimationFrame(tick); };
      for (const v of videos) for (const e of ["seeked", "loadedmetadata", "pause"]) v.addEventListener(e, () => onChange());
      this.lead.addEventListener("play", () => requestAnimationFrame(tick));
    }
    get frames() { return Math.max(1, Math.round((this.lead.duration || 0) * this.fps)); }
    frame() { return Math.min(this.frames - 1, Math.floor(this.lead.currentTime * this.fps + 1e-3)); }
    seek(frame) {
      const f = Math.max(0, Math.min(this.frames - 1, frame));
      for (const v of this.videos) v.currentTime = (f + 0.5) / this.fps;  // the middle of the frame: never the one before
      this.onChange();
    }
    sync() {
      for (const v of this.videos.slice(1)) {
        if (Math.abs(v.currentTime - this.lead.currentTime) > 0.5 / this.fps) v.currentTime = this.lead.currentTime;
        if (v.paused !== this.lead.paused) (this.lead.paused ? v.pause() : v.play().catch(() => {}));
      }
    }
    stop() {
      if (this.reverse) { clearInterval(this.reverse); this.reverse = null; }
      this.speed = 0;
      for (const v of this.videos) v.pause();
      this.seek(this.frame());
    }
    step(n) { this.stop(); this.seek(this.frame() + n); }
    forward() {  // L: play; again: twice as fast (to 4x)
      if (this.reverse) { clearInterval(this.reverse); this.reverse = null; this.speed = 0; }
      this.speed = this.speed > 0 ? Math.min(4, this.speed * 2) : 1;
      for (const v of this.videos) { v.playbackRate = this.speed; v.play().catch(() => {}); }
    }
    backward() {  // J: a browser cannot play backwards, so step back a frame at a time, at 1x, 2x, 4x
      for (const v of this.videos) v.pause();
      this.speed = this.speed < 0 ? Math.max(-4, this.speed * 2) : -1;
      if (this.reverse) clearInterval(this.reverse);
      this.reverse = setInterval(() => {
        const f = this.frame();
        if (f <= 0) { this.stop(); return; }
        this.seek(f - 1);
      }, 1000 / (this.fps * -this.speed));
    }
    key(key, shift) {
      if (key === "l" || key === "L") this.forward();
      else if (key === "j" || key === "J") this.backward();
      else if (key === "k" || key === "K" || key === " ") this.stop();
      else if (key === "ArrowRight") this.step(shift ? 10 : 1);
      else if (key === "ArrowLeft") this.step(shift ? -10 : -1);
      else if (key === "Home") { this.stop(); this.seek(0); }
      else if (key === "End") { this.stop(); this.seek(this.frames - 1); }
      else return false;
      return true;
    }
  }

  function typing(event) {
    const t = event.target;
    return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
  }

  function keys(clock, extra) {
    document.addEventListener("keydown", event => {
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      if ((extra && extra(event.key)) || clock.key(event.key, event.shiftKey)) event.preventDefault();
    });
    for (const b of document.querySelectorAll("button[data-key]")) {
      b.addEventListener("click", () => { if (!(extra && extra(b.dataset.key))) clock.key(b.dataset.key, false); });
    }
  }

  // The cut player.
  const player = document.getElementById("player");
  if (player) {
    const video = document.getElementById("cut");
    const fps = Number(player.dataset.rateNum) / Number(player.dataset.rateDen);
    const nominal = Math.round(fps), drop = player.dataset.dropFrame === "true";
    const start = Number(player.dataset.recordStart);
    const parts = [...document.querySelectorAll("#timeline li")];
    const total = parts.reduce((n, p) => n + Number(p.dataset.frames), 0);
    const partAt = f => parts.find(p => f >= Number(p.dataset.at) && f < Number(p.dataset.at) + Number(p.dataset.frames))
      || parts[parts.length - 1];
    document.getElementById("rate-label").textContent = `${(fps).toFixed(3).replace(/\.?0+$/, "")} fps`;
    const clock = new Clock([video], fps, () => {
      const f = clock.frame(), part = partAt(f);
      document.getElementById("tc").textContent = timecode(start + f, nominal, drop);
      document.getElementById("playhead").style.left = `${(100 * f) / Math.max(1, total)}%`;
      for (const p of parts) p.classList.toggle("here", p === part);
      if (!part) return;
      const offset = f - Number(part.dataset.at);
      document.getElementById("shot-label").textContent = part.dataset.label;
      document.getElementById("shot-frame").textContent = String(offset);
      const note = document.getElementById("note-here");
      if (part.dataset.shot) {
        const media = Number(part.dataset.head) + Math.floor(offset * Number(part.dataset.speed));
        note.href = `/s/${encodeURIComponent(player.dataset.board)}/shot/${encodeURIComponent(part.dataset.shot)}`
          + `?note_frame=${media}#review`;
        note.hidden = false;
      } else note.hidden = true;
    });
    const shot = n => {  // the start of the shot n parts away from the one under the playhead
      const i = parts.indexOf(partAt(clock.frame())) + n;
      const target = parts[Math.max(0, Math.min(parts.length - 1, i))];
      clock.stop(); clock.seek(Number(target.dataset.at));
    };
    keys(clock, key => {
      if (key === "ArrowUp") { shot(-1); return true; }
      if (key === "ArrowDown") { shot(1); return true; }
      return false;
    });
    for (const b of document.querySelectorAll("button[data-seek]")) {  // a shot's mark, a marker, a note
      b.addEventListener("click", () => { clock.stop(); clock.seek(Number(b.dataset.seek)); });
    }
    video.addEventListener("loadedmetadata", () => clock.seek(0));
    window.milimoPlayer = clock;  // for a person's console, and the browser tests
  }

  // A/B compare on a shot page: two takes on one clock.
  const compare = document.querySelector(".compare[data-rate-num]");
  if (compare) {
    const videos = [...compare.querySelectorAll("video")];
    const fps = Number(compare.dataset.rateNum) / Number(compare.dataset.rateDen);
    const readout = document.getElementById("ab-frame");
    const clock = new Clock(videos, fps, () => { readout.textContent = String(clock.frame()); });
    document.getElementById("ab-play").addEventListener("click", () => (videos[0].paused ? clock.forward() : clock.stop()));
    // Flip: the two pictures in one place, one shown at a time; both stay decoded on the same frame, so a flip
    // is never a black frame or a seek.
    const figures = [...compare.querySelectorAll("figure")];
    let shown = -1;
    const flip = () => {
      shown = (shown + 1) % 2;
      compare.classList.add("flip");
      figures.forEach((f, i) => f.classList.toggle("hidden", i !== shown));
      document.getElementById("ab-showing").textContent = ` · showing ${shown === 0 ? "A" : "B"}`;
    };
    document.getElementById("ab-flip").addEventListener("click", flip);
    keys(clock, key => { if (key === "f" || key === "F") { flip(); return true; } return false; });
    window.milimoPlayer = clock;
  }
})();
