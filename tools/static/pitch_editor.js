// The pitch editor of the Convert tab: a <canvas> showing the pitch curve over the input's spectrogram.
// Loaded by tools/ui_pitch_editor.py as the body of a function run on page load; it defines
// window.rvcPitch. Python sends {curve, view} (tools.api.pitch.PitchCurveResult.editor_json) to load();
// fileJson() gives the pitch file object (infer_pack.pitch_file) with the edit list back to Python,
// which replays the edits itself (infer_pack.pitch_edit); the replay here only draws them.
// Frames are RVC's 10 ms f0 frames; edits cover [start, end). Only the visible frames are drawn.
// Playback: one <audio id="pitch-audio"> plays the input or the last conversion of it (the URLs Gradio serves
// them at); both share the curve's time axis, and the cursor is the playing file's currentTime.
if (!window.rvcPitch) {
  const LEFT = 46, WAVE = 56, AXIS = 18, MIN_VISIBLE = 50;
  const NOTES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
  const st = { file: null, view: null, img: null, extracted: null, curve: null, sel: null, start: 0,
               visible: 0, drag: null, drawMode: false, bound: false,
               inputUrl: null, inputKey: null, lastOutput: null, source: "input", cursor: null, raf: 0,
               halted: false };
  const el = (id) => document.getElementById(id);
  const hzToMidi = (hz) => 69 + 12 * Math.log2(hz / 440);
  const midiToHz = (m) => 440 * Math.pow(2, (m - 69) / 12);
  const noteName = (m) => NOTES[((Math.round(m) % 12) + 12) % 12] + (Math.floor(Math.round(m) / 12) - 1);

  // -- the edits (mirror of infer_pack/pitch_edit.py, for drawing) ---------------------------------
  function applyEdit(c, base, e) {
    const lo = e.start, hi = e.end;
    if (e.op === "shift") { const f = Math.pow(2, e.semitones / 12); for (let k = lo; k < hi; k++) c[k] *= f; }
    else if (e.op === "octave") { const f = e.up ? 2 : 0.5; for (let k = lo; k < hi; k++) c[k] *= f; }
    else if (e.op === "unvoice") { for (let k = lo; k < hi; k++) c[k] = 0; }
    else if (e.op === "restore") { for (let k = lo; k < hi; k++) c[k] = base[k]; }
    else if (e.op === "voice") {
      const voiced = []; for (let k = 0; k < c.length; k++) if (c[k] > 0) voiced.push(k);
      if (!voiced.length) return;
      let j = 0;
      for (let k = lo; k < hi; k++) {
        if (c[k] > 0) continue;
        while (j < voiced.length && voiced[j] < k) j++;
        const a = voiced[j - 1], b = voiced[j];
        c[k] = a === undefined ? c[b] : b === undefined ? c[a] : c[a] + (c[b] - c[a]) * (k - a) / (b - a);
      }
    } else if (e.op === "flatten") {
      const idx = []; for (let k = lo; k < hi; k++) if (c[k] > 0) idx.push(k);
      if (!idx.length) return;
      if (e.mode === "median") {
        const v = idx.map((k) => c[k]).sort((x, y) => x - y), m = v.length >> 1;
        const med = v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
        idx.forEach((k) => { c[k] = med; });
      } else {
        const half = e.window_frames >> 1, src = Float64Array.from(c);
        for (let k = lo; k < hi; k++) {
          if (!(src[k] > 0)) continue;
          let a = k, b = k; while (a - 1 >= lo && src[a - 1] > 0) a--; while (b + 1 < hi && src[b + 1] > 0) b++;
          let s = 0, n = 0;
          for (let i = Math.max(a, k - half); i <= Math.min(b, k + half); i++) { s += Math.log2(src[i]); n++; }
          c[k] = Math.pow(2, s / n);
        }
      }
    } else if (e.op === "draw") {
      const p = e.points.slice().sort((x, y) => x[0] - y[0]);
      const first = Math.ceil(p[0][0]), last = Math.floor(p[p.length - 1][0]);
      let j = 0;
      for (let k = first; k <= last; k++) {
        while (j < p.length - 2 && p[j + 1][0] < k) j++;
        const [f0, h0] = p[j], [f1, h1] = p[Math.min(j + 1, p.length - 1)];
        const t = f1 > f0 ? (k - f0) / (f1 - f0) : 0;
        c[k] = Math.pow(2, Math.log2(h0) + t * (Math.log2(h1) - Math.log2(h0)));
      }
    }
  }
  function replay() {
    const c = Float64Array.from(st.extracted);
    st.file.edits.slice(0, st.file.position).forEach((e) => applyEdit(c, st.extracted, e));
    st.curve = c;
  }
  function push(edit) {
    st.file.edits = st.file.edits.slice(0, st.file.position).concat([edit]);
    st.file.position = st.file.edits.length;
    replay(); draw();
  }
  function onSelection(op, extra) {
    if (!st.sel) { status("select a stretch first (drag across the curve, or the arrow keys)"); return; }
    push(Object.assign({ op: op, start: st.sel[0], end: st.sel[1] }, extra || {}));
  }

  // -- geometry ------------------------------------------------------------------------------------
  const canvas = () => el("pitch-canvas");
  function dims() {
    const c = canvas(); const w = c.width - LEFT, h = c.height - WAVE - AXIS;
    return { w: w, h: h, ppf: w / st.visible, span: st.view.high_midi - st.view.low_midi };
  }
  const xToFrame = (x) => st.start + (x - LEFT) / dims().ppf;
  const frameToX = (f) => LEFT + (f - st.start) * dims().ppf;
  const midiToY = (m) => { const d = dims(); return (st.view.high_midi - m) / d.span * d.h; };
  const yToMidi = (y) => { const d = dims(); return st.view.high_midi - y / d.h * d.span; };
  function clampView() {
    const n = st.curve.length;
    st.visible = Math.max(Math.min(MIN_VISIBLE, n), Math.min(n, st.visible));
    st.start = Math.max(0, Math.min(n - st.visible, st.start));
  }
  function zoom(factor, atFrame) {
    const at = atFrame === undefined ? st.start + st.visible / 2 : atFrame;
    const rel = (at - st.start) / st.visible;
    st.visible = st.visible * factor; clampView();
    st.start = at - rel * st.visible; clampView(); draw();
  }

  // -- drawing (only the visible frames) -----------------------------------------------------------
  function draw() {
    const c = canvas(); if (!c || !st.curve) return;
    c.width = Math.max(300, c.clientWidth || 900);
    const g = c.getContext("2d"), d = dims();
    g.fillStyle = "#111"; g.fillRect(0, 0, c.width, c.height);
    if (st.img && st.img.complete) {
      const step = st.view.frame_step;
      g.imageSmoothingEnabled = true;
      g.drawImage(st.img, st.start / step, 0, st.visible / step, st.img.height, LEFT, 0, d.w, d.h);
    }
    g.font = "11px sans-serif"; g.textBaseline = "middle";
    for (let m = Math.ceil(st.view.low_midi); m <= st.view.high_midi; m++) {
      const isC = m % 12 === 0, y = midiToY(m);
      if (!isC && d.h / d.span < 6) continue;
      g.strokeStyle = isC ? "rgba(255,255,255,0.35)" : "rgba(255,255,255,0.08)";
      g.beginPath(); g.moveTo(LEFT, y); g.lineTo(c.width, y); g.stroke();
      if (isC || d.h / d.span >= 11) { g.fillStyle = "#ddd"; g.fillText(noteName(m), 4, y); }
    }
    if (st.sel) {
      g.fillStyle = "rgba(80,160,255,0.25)";
      g.fillRect(frameToX(st.sel[0]), 0, (st.sel[1] - st.sel[0]) * d.ppf, d.h + WAVE);
    }
    const preview = st.drag && st.drag.kind === "shift" ? st.drag.semitones : 0;
    curveLine(g, st.extracted, "rgba(255,255,255,0.45)", 1, 0);
    curveLine(g, st.curve, "#ffcc33", 2, preview);
    if (st.drag && st.drag.kind === "draw") {
      g.strokeStyle = "#ff6688"; g.lineWidth = 2; g.beginPath();
      st.drag.points.forEach((p, i) => { const x = frameToX(p[0]), y = midiToY(hzToMidi(p[1]));
        if (i) g.lineTo(x, y); else g.moveTo(x, y); });
      g.stroke();
    }
    waveStrip(g, d);
    timeAxis(g, d);
    cursorLine(g, d);
  }
  function curveLine(g, values, color, width, previewSemitones) {
    const first = Math.max(0, Math.floor(st.start)), last = Math.min(values.length - 1, Math.ceil(st.start + st.visible));
    const step = Math.max(1, Math.floor(1 / dims().ppf));
    g.strokeStyle = color; g.lineWidth = width; g.beginPath();
    let open = false;
    for (let k = first; k <= last; k += step) {
      let hz = values[k];
      if (!(hz > 0)) { open = false; continue; }
      if (previewSemitones && st.sel && k >= st.sel[0] && k < st.sel[1]) hz *= Math.pow(2, previewSemitones / 12);
      const x = frameToX(k), y = midiToY(hzToMidi(hz));
      if (open) g.lineTo(x, y); else { g.moveTo(x, y); open = true; }
    }
    g.stroke();
  }
  function waveStrip(g, d) {
    const top = d.h + 2, mid = top + (WAVE - 4) / 2, wave = st.view.waveform;
    g.fillStyle = "#1c2430"; g.fillRect(LEFT, top, d.w, WAVE - 4);
    g.fillStyle = "#6fa8dc";
    for (let x = 0; x < d.w; x++) {
      const a = Math.floor(st.start + x / d.ppf), b = Math.max(a + 1, Math.floor(st.start + (x + 1) / d.ppf));
      let peak = 0; for (let k = a; k < b && k < wave.length; k++) peak = Math.max(peak, wave[k]);
      const h = peak * (WAVE - 6) / 2; g.fillRect(LEFT + x, mid - h, 1, 2 * h);
    }
  }
  function timeAxis(g, d) {
    const y = d.h + WAVE + AXIS / 2, seconds = st.visible / 100;
    const tick = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60].find((t) => seconds / t <= 12) || 120;
    g.fillStyle = "#ccc";
    for (let t = Math.ceil(st.start / 100 / tick) * tick; t * 100 <= st.start + st.visible; t += tick) {
      g.fillText(t.toFixed(tick < 1 ? 1 : 0) + " s", frameToX(t * 100) + 2, y);
    }
  }
  function cursorLine(g, d) {
    const x = st.cursor === null ? null : frameToX(st.cursor), shown = x !== null && x >= LEFT && x <= LEFT + d.w;
    if (shown) { g.strokeStyle = "#ff4040"; g.lineWidth = 2; g.beginPath(); g.moveTo(x, 0); g.lineTo(x, d.h + WAVE); g.stroke(); }
    // for the test and for assistive reading: where the cursor was drawn, and for which time
    canvas().dataset.cursorX = shown ? x.toFixed(2) : "";
    canvas().dataset.cursorTime = st.cursor === null ? "" : (st.cursor / 100).toFixed(4);
  }
  function status(text) {
    const s = el("pitch-status"); if (!s) return;
    const sel = st.sel ? `selection ${(st.sel[0] / 100).toFixed(2)}-${(st.sel[1] / 100).toFixed(2)} s ` +
      `(frames ${st.sel[0]}-${st.sel[1] - 1})` : "no selection";
    s.textContent = `${sel}; edits ${st.file.position}/${st.file.edits.length}` + (text ? `; ${text}` : "");
    s.dataset.selStart = st.sel ? st.sel[0] : ""; s.dataset.selEnd = st.sel ? st.sel[1] : "";
    s.dataset.position = st.file.position;
  }

  // -- mouse and keyboard --------------------------------------------------------------------------
  function setSel(a, b) {
    const n = st.curve.length, lo = Math.max(0, Math.min(a, b)), hi = Math.min(n, Math.max(a, b));
    st.sel = hi > lo ? [lo, hi] : null;
    if (!playing()) st.cursor = null;  // a new selection is where the next playback starts
  }
  function pointer(ev) {
    const r = canvas().getBoundingClientRect();
    return { x: (ev.clientX - r.left) * canvas().width / r.width, y: ev.clientY - r.top };
  }
  function onDown(ev) {
    if (!st.curve) return;
    const p = pointer(ev); if (p.x < LEFT) return;
    canvas().focus();
    const f = xToFrame(p.x);
    if (p.y >= dims().h && p.y < dims().h + WAVE) { seek(f); return; }  // the waveform strip seeks
    if (st.drawMode) { st.drag = { kind: "draw", points: [[f, midiToHz(yToMidi(p.y))]] }; return; }
    if (st.sel && !ev.shiftKey && f >= st.sel[0] && f < st.sel[1] && p.y < dims().h) {
      st.drag = { kind: "shift", y0: p.y, semitones: 0 }; return;
    }
    const k = Math.round(f); st.drag = { kind: "select", anchor: k }; setSel(k, k + 1); draw(); status();
  }
  function onMove(ev) {
    if (!st.drag) return;
    const p = pointer(ev), d = dims();
    if (st.drag.kind === "select") { setSel(st.drag.anchor, Math.round(xToFrame(p.x))); }
    else if (st.drag.kind === "shift") {
      const raw = (st.drag.y0 - p.y) / (d.h / d.span);
      st.drag.semitones = ev.altKey ? Math.round(raw * 10) / 10 : Math.round(raw);  // Alt: 10-cent steps
    } else { st.drag.points.push([xToFrame(p.x), midiToHz(yToMidi(p.y))]); }
    draw(); status(st.drag.kind === "shift" ? `shift ${st.drag.semitones} st` : "");
  }
  function onUp() {
    const drag = st.drag; st.drag = null; if (!drag) return;
    if (drag.kind === "shift" && drag.semitones) onSelection("shift", { semitones: drag.semitones });
    else if (drag.kind === "draw") {
      const pts = drag.points.map((q) => [Math.round(q[0] * 100) / 100, q[1]]).filter((q) => q[0] >= 0 && q[0] < st.curve.length);
      const frames = pts.map((q) => q[0]);
      if (pts.length && Math.ceil(Math.min(...frames)) <= Math.floor(Math.max(...frames))) push({ op: "draw", points: pts });
    }
    draw(); status();
  }
  function onKey(ev) {
    if (!st.curve) return;
    const n = st.curve.length, big = ev.shiftKey ? 10 : 1, key = ev.key;
    if ((ev.ctrlKey || ev.metaKey) && key.toLowerCase() === "z") { (ev.shiftKey ? redo : undo)(); }
    else if ((ev.ctrlKey || ev.metaKey) && key.toLowerCase() === "y") { redo(); }
    else if (key === "ArrowUp" || key === "ArrowDown") {
      const sign = key === "ArrowUp" ? 1 : -1;
      onSelection("shift", { semitones: ev.altKey ? sign * 0.1 : sign * (ev.shiftKey ? 12 : 1) });
    } else if (key === "ArrowLeft" || key === "ArrowRight") {
      const d = key === "ArrowLeft" ? -big : big;
      if (!st.sel) setSel(Math.round(st.start), Math.round(st.start) + 10);
      else if (ev.altKey) setSel(st.sel[0], st.sel[1] + d);  // Alt: move the end only (resize)
      else { const w = st.sel[1] - st.sel[0], a = Math.max(0, Math.min(n - w, st.sel[0] + d)); setSel(a, a + w); }
      if (st.sel[1] > st.start + st.visible) st.start = st.sel[1] - st.visible;
      if (st.sel[0] < st.start) st.start = st.sel[0];
      clampView();
    } else if (key === "+" || key === "=") zoom(0.5);
    else if (key === "-") zoom(2);
    else if (key === "PageDown" || key === "PageUp") { st.start += (key === "PageDown" ? 0.8 : -0.8) * st.visible; clampView(); }
    else if (key === " ") toggle(ev.shiftKey ? "conversion" : "input");
    else if (key === "Escape") { if (playing() || st.cursor !== null) stop(); else st.sel = null; }
    else return;
    ev.preventDefault(); draw(); status();
  }
  function onWheel(ev) {
    if (!st.curve) return;
    ev.preventDefault();
    if (Math.abs(ev.deltaX) > Math.abs(ev.deltaY) || ev.shiftKey) {
      st.start += Math.sign(ev.deltaX || ev.deltaY) * 0.1 * st.visible; clampView(); draw();
    } else zoom(ev.deltaY > 0 ? 1.25 : 0.8, xToFrame(pointer(ev).x));
  }
  function undo() { st.file.position = Math.max(0, st.file.position - 1); replay(); draw(); status(); }
  function redo() { st.file.position = Math.min(st.file.edits.length, st.file.position + 1); replay(); draw(); status(); }

  // -- playback ------------------------------------------------------------------------------------
  const audio = () => el("pitch-audio");
  const playing = () => { const a = audio(); return !!a && !a.paused && !a.ended; };
  const urlOf = (source) => source === "conversion" ? (st.lastOutput && st.lastOutput.key === st.inputKey ? st.lastOutput.url : null) : st.inputUrl;
  function toggle(source) {
    const a = audio(), url = urlOf(source);
    if (!a || !st.curve) return;
    if (playing() && st.source === source) { pause(); return; }
    if (!url) { status(source === "conversion" ? "no conversion of this input yet" : "no input audio to play"); return; }
    const from = playing() ? a.currentTime * 100 : st.cursor ?? (st.sel ? st.sel[0] : st.start);
    if (a.getAttribute("src") !== url) { a.src = url; }
    st.source = source; a.dataset.source = source;
    a.currentTime = Math.max(0, from) / 100;
    a.play().catch((err) => { status("playback failed: " + err.message); buttons(); });
    buttons();
  }
  function pause() { const a = audio(); if (a) a.pause(); }  // the cursor stays: the next play resumes there
  function stop() {  // unlike pause, forgets the position
    if (playing()) { st.halted = true; pause(); }
    st.cursor = null; if (st.curve) draw(); buttons();
  }
  function seek(frame) {
    st.cursor = Math.max(0, Math.min(st.curve.length, frame));
    if (playing()) audio().currentTime = st.cursor / 100;
    draw(); status();
  }
  function follow() {
    // each animation frame while playing: the cursor from the audio's clock; the view pages along with it
    st.raf = 0;
    const a = audio(); if (!a || !st.curve) return;
    st.cursor = a.currentTime * 100;
    if (st.cursor >= st.start + st.visible || st.cursor < st.start) { st.start = st.cursor; clampView(); }
    draw();
    if (playing()) st.raf = requestAnimationFrame(follow);
  }
  function buttons() {
    const a = audio(), on = playing(), conv = el("pitch-btn-play-output"), inp = el("pitch-btn-play-input");
    if (inp) { inp.textContent = on && st.source === "input" ? "Pause input" : "Play input"; inp.classList.toggle("active", on && st.source === "input"); }
    if (conv) {
      conv.disabled = !urlOf("conversion");
      conv.textContent = on && st.source === "conversion" ? "Pause conversion" : "Play last conversion";
      conv.classList.toggle("active", on && st.source === "conversion");
    }
    if (a) a.dataset.playing = on ? "1" : "";
  }
  function bindAudio() {
    const a = audio(); if (!a || a.dataset.bound) return; a.dataset.bound = "1";
    a.addEventListener("play", () => { if (!st.raf) st.raf = requestAnimationFrame(follow); buttons(); });
    a.addEventListener("pause", () => {
      st.cursor = st.halted ? null : a.currentTime * 100; st.halted = false;
      if (st.curve) draw(); buttons();
    });
    a.addEventListener("ended", () => { st.cursor = null; if (st.curve) draw(); buttons(); });
  }

  function bind() {
    if (st.bound) return; st.bound = true;
    const c = canvas();
    c.addEventListener("mousedown", onDown);
    window.addEventListener("mousemove", onMove);
    window.addEventListener("mouseup", onUp);
    c.addEventListener("keydown", onKey);
    c.addEventListener("wheel", onWheel, { passive: false });
    const actions = {
      "octave-up": () => onSelection("octave", { up: true }), "octave-down": () => onSelection("octave", { up: false }),
      "unvoice": () => onSelection("unvoice"), "voice": () => onSelection("voice"),
      "flatten": () => onSelection("flatten", { mode: "median", window_frames: 15 }),
      "smooth": () => onSelection("flatten", { mode: "smooth", window_frames: 15 }),
      "keep": () => onSelection("restore"), "undo": undo, "redo": redo,
      "reset": () => push({ op: "restore", start: 0, end: st.curve.length }),
      "draw": () => { st.drawMode = !st.drawMode; el("pitch-btn-draw").classList.toggle("active", st.drawMode); status(st.drawMode ? "draw mode" : ""); },
      "zoom-in": () => zoom(0.5), "zoom-out": () => zoom(2),
      "fit": () => { st.start = 0; st.visible = st.curve.length; clampView(); draw(); },
      "play-input": () => toggle("input"), "play-output": () => toggle("conversion"),
    };
    Object.keys(actions).forEach((name) => {
      const b = el("pitch-btn-" + name); if (b) b.addEventListener("click", () => { actions[name](); canvas().focus(); status(); });
    });
    if (window.ResizeObserver) new ResizeObserver(() => draw()).observe(c);
    bindAudio();
  }
  // Gradio's file value of an audio component: {path, url, ...}; the path names the upload.
  const fileKey = (file) => file && (file.path || file.url) || null;

  window.rvcPitch = {
    load(text, input) {
      if (!text) return;
      stop();
      st.inputUrl = input && input.url || null; st.inputKey = fileKey(input); st.cursor = null;
      const data = JSON.parse(text);
      st.file = data.curve; st.view = data.view; st.extracted = Float64Array.from(st.file.extracted_hz);
      st.file.edits = st.file.edits || []; st.file.position = st.file.position ?? st.file.edits.length;
      replay(); st.sel = null; st.start = 0; st.visible = Math.min(st.curve.length, 1000); clampView();
      st.img = new Image(); st.img.onload = draw; st.img.src = st.view.spectrogram;
      bind(); draw(); buttons(); status("loaded " + (st.file.source.input || ""));
    },
    // The Convert tab's output changed (its Convert button or "Convert with this curve"): playable here when it
    // was converted from the input the curve was extracted from.
    conversion(output, input) {
      st.lastOutput = output && output.url ? { url: output.url, key: fileKey(input) } : null;
      buttons();
    },
    fileJson() { return st.file ? JSON.stringify(st.file) : ""; },
    // The extracted curve after `edits` as this script draws it (a test compares it with Python's replay).
    replayed(edits) { const c = Float64Array.from(st.extracted); edits.forEach((e) => applyEdit(c, st.extracted, e)); return Array.from(c); },
    state: st,
  };
}
