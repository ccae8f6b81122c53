// The avatar page: one WHEP client (avatar video + voice in, the microphone out on the same
// peer connection) and a small JSON control API. Plain JS, no build step, no dependencies.
// Page URL options: ?avatar=ID&size=WxH&mic=off|listen|puppet&autostart=1 and #token=TOKEN.
"use strict";

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);

const page = {
  token: sessionStorage.getItem("avatar-token") || "",
  avatar: query.get("avatar") || "",
  size: query.get("size") || "",
  micMode: "off",
  info: null,
  pc: null,
  resource: null,
  micTrack: null,
  audioSender: null,
  remote: null,
  statsTimer: null,
  lastStats: null,
  voiceRms: 0,
  micRms: 0,
  audioContext: null,
};
window.avatarPage = page;

// ------------------------------------------------------------------ HTTP

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (page.token) h.Authorization = "Bearer " + page.token;
  return h;
}

async function failure(res) {
  let message = res.status + " " + res.statusText;
  try { message = (await res.json()).message || message; } catch (e) { /* not JSON */ }
  if (res.status === 401) showLogin();
  return new Error(message);
}

async function api(path, options) {
  options = options || {};
  const res = await fetch(path, Object.assign({}, options, { headers: headers(options.headers) }));
  if (!res.ok) throw await failure(res);
  return res.status === 204 ? null : res.json();
}

function showError(error) {
  $("error").textContent = error ? String(error.message || error) : "";
}

function setState(text) { $("state").textContent = text; }

function showLogin() {
  $("login").hidden = false;
  $("token").focus();
  setState("sign in");
}

// ------------------------------------------------------------------ session

function setRunning(running) {
  $("hint").hidden = running;
  $("start").disabled = running;
  for (const id of ["stop", "interrupt"]) $(id).disabled = !running;
  for (const el of $("say").elements) el.disabled = !running;
  for (const el of $("behaviours").querySelectorAll("button")) el.disabled = !running;
}

function iceGathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

page.start = async function start() {
  if (page.pc) return;
  if (page.refusedUpload) {
    // Never fall back to the sample face silently: say so once; pressing Start again uses it.
    showError(`${page.refusedUpload} Upload another, or press Start again to use the sample face.`);
    page.refusedUpload = null;
    return;
  }
  showError(null);
  setState("connecting");
  ensureAudioContext();
  const pc = new RTCPeerConnection();  // no STUN/TURN: the node answers with its own addresses
  page.pc = pc;
  page.remote = new MediaStream();
  pc.addTransceiver("video", { direction: "recvonly" });
  // The avatar's voice comes in and the microphone goes out on the same audio section.
  page.audioSender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
  pc.ontrack = (event) => {
    page.remote.addTrack(event.track);
    $("avatar").srcObject = page.remote;
    if (event.track.kind === "audio") meter(new MediaStream([event.track]), "voiceRms", "voice-level");
  };
  pc.onconnectionstatechange = () => {
    setState(pc.connectionState);
    if (pc.connectionState === "failed") page.stop("the connection to the node failed");
  };
  try {
    if (page.micMode !== "off") await openMic(page.micMode);
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, 2000);
    const params = new URLSearchParams({ mic: page.micMode });
    if (page.avatar) params.set("avatar", page.avatar);
    if (page.size) params.set("size", page.size);
    const res = await fetch("/whep?" + params, {
      method: "POST",
      headers: headers({ "Content-Type": "application/sdp" }),
      body: pc.localDescription.sdp,
    });
    if (res.status !== 201) throw await failure(res);
    page.resource = res.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
    setRunning(true);
    page.statsTimer = setInterval(updateStats, 1000);
  } catch (error) {
    showError(error);
    await page.stop();
  }
};

page.stop = async function stop(reason) {
  const pc = page.pc, resource = page.resource;
  page.pc = null;
  page.resource = null;
  clearInterval(page.statsTimer);
  setRunning(false);
  if (resource) {
    try { await fetch(resource, { method: "DELETE", headers: headers() }); } catch (e) { /* gone */ }
  }
  if (pc) pc.close();
  closeMic();
  $("avatar").srcObject = null;
  $("stats").textContent = "not connected";
  setState(reason ? "ended" : "idle");
  if (reason) showError(reason);
};

async function control(body) {
  if (!page.resource) throw new Error("start a session first");
  return api(page.resource + "/control", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
}
page.say = (text) => control({ action: "say", text });
page.interrupt = () => control({ action: "interrupt" });
page.behaviour = (name) => control({ action: "behaviour", name });

// ------------------------------------------------------------------ microphone

async function openMic(mode) {
  if (!page.micTrack) {
    // Echo cancellation keeps the avatar's own voice out of "listen"; puppet wants the voice as it is.
    const media = await navigator.mediaDevices.getUserMedia({ audio: {
      echoCancellation: mode === "listen", noiseSuppression: false, autoGainControl: false,
    } });
    page.micTrack = media.getAudioTracks()[0];
    meter(media, "micRms", "mic-level");
  }
  if (page.audioSender) await page.audioSender.replaceTrack(page.micTrack);
}

function closeMic() {
  if (page.audioSender && page.pc) page.audioSender.replaceTrack(null);
  if (page.micTrack) page.micTrack.stop();
  page.micTrack = null;
  page.micRms = 0;
}

page.setMic = async function setMic(mode) {
  page.micMode = mode;
  for (const input of document.querySelectorAll("input[name=mic]")) input.checked = input.value === mode;
  try {
    if (mode === "off") closeMic(); else await openMic(mode);
    if (page.resource) await control({ action: "mic", mode });
  } catch (error) {
    showError(error);
  }
};

// ------------------------------------------------------------------ levels and stats

function ensureAudioContext() {
  if (!page.audioContext) page.audioContext = new AudioContext();
  if (page.audioContext.state === "suspended") page.audioContext.resume();
}

function meter(stream, field, meterId) {
  ensureAudioContext();
  const analyser = page.audioContext.createAnalyser();
  analyser.fftSize = 1024;
  page.audioContext.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const track = stream.getAudioTracks()[0];
  const timer = setInterval(() => {
    if (track.readyState === "ended") { clearInterval(timer); page[field] = 0; return; }
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    page[field] = Math.sqrt(sum / samples.length);
    $(meterId).value = Math.min(1, page[field] * 4);
  }, 50);
}

async function updateStats() {
  const pc = page.pc;
  if (!pc || !page.resource) return;
  let node;
  try { node = await api(page.resource + "/stats"); } catch (e) { return; }
  const browser = { video: {}, audio: {}, rttMs: 0 };
  (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && (s.kind === "video" || s.kind === "audio")) browser[s.kind] = s;
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      browser.rttMs = s.currentRoundTripTime * 1000;
    }
  });
  const v = browser.video, a = browser.audio;
  const jitterMs = (s) => (s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : 0);
  const fps = v.framesPerSecond !== undefined ? v.framesPerSecond : node.fps;
  // Frame due on the node -> shown here: node lag + wait for the encoder + one way + jitter buffer.
  const latency = node.node_lag_ms + node.encoder_wait_ms + browser.rttMs / 2 + Math.max(jitterMs(v), jitterMs(a));
  const offset = (a.estimatedPlayoutTimestamp && v.estimatedPlayoutTimestamp)
    ? a.estimatedPlayoutTimestamp - v.estimatedPlayoutTimestamp : node.sender_av_offset_ms;
  const dropped = node.frames_dropped + (v.framesDropped || 0);
  page.lastStats = { node, fps, latencyMs: latency, avOffsetMs: offset, dropped, browser };
  const sign = offset > 0 ? "+" : "";
  $("stats").textContent = `${fps.toFixed(1)} fps · latency ${Math.round(latency)} ms · ` +
    `A/V ${offset === null || offset === undefined ? "?" : sign + Math.round(offset)} ms · dropped ${dropped}` +
    (node.mic.mode !== "off" ? ` · mic ${node.mic.mode} ${(node.mic.received_ms / 1000).toFixed(1)} s` : "");
}

// ------------------------------------------------------------------ avatar choice

async function useAvatar(id) {
  page.avatar = id;
  page.refusedUpload = null;
  if (page.pc) { await page.stop(); await page.start(); }
}

async function upload(file) {
  const limit = page.info ? page.info.max_upload_bytes : Infinity;
  if (file.size > limit) throw new Error(`the file is over ${Math.round(limit / 1048576)} MiB; resize the photo or re-encode the video (480p) first`);
  $("photo-note").textContent = "preparing...";
  const prepared = await api("/api/avatars", {
    method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
  });
  $("photo-note").textContent = `ready (${prepared.width}x${prepared.height})` +
    (prepared.notes && prepared.notes.length ? ". " + prepared.notes.join(" ") : "");
  $("avatar-id-text").value = prepared.avatar_id;
  return prepared.avatar_id;
}
page.upload = upload;

// ------------------------------------------------------------------ wiring

async function loadInfo() {
  try {
    page.info = await api("/api/info");
  } catch (error) {
    if (!$("login").hidden) return false;
    showError(error);
    return false;
  }
  $("login").hidden = true;
  setState("idle");
  const chips = $("behaviours");
  chips.textContent = "";
  for (const name of page.info.behaviours) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name.replace(/_/g, " ");
    button.disabled = !page.pc;
    button.onclick = () => page.behaviour(name).catch(showError);
    chips.appendChild(button);
  }
  return true;
}

$("login").onsubmit = async (event) => {
  event.preventDefault();
  page.token = $("token").value.trim();
  sessionStorage.setItem("avatar-token", page.token);
  if (await loadInfo()) showError(null);
};
$("start").onclick = () => page.start();
$("stop").onclick = () => page.stop();
$("interrupt").onclick = () => page.interrupt().catch(showError);
$("say").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (text) page.say(text).then(() => { $("text").value = ""; }, showError);
};
for (const input of document.querySelectorAll("input[name=mic]")) {
  input.onchange = () => page.setMic(input.value);
}
$("photo").onchange = async () => {
  const file = $("photo").files[0];
  if (!file) return;
  try {
    await useAvatar(await upload(file));
  } catch (error) {
    const message = String(error.message || error);
    if (!page.avatar) page.refusedUpload = `Your upload (${file.name}) was refused: ${message}`;
    showError(error);
    $("photo-note").textContent = "refused: " + message;
  }
};
$("avatar-id").onsubmit = (event) => {
  event.preventDefault();
  useAvatar($("avatar-id-text").value.trim()).catch(showError);
};
// The tab goes away: end the session now rather than when the node notices the silence.
window.addEventListener("pagehide", () => {
  if (page.resource) fetch(page.resource, { method: "DELETE", headers: headers(), keepalive: true });
});

(async function init() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    page.token = fragment.get("token");
    sessionStorage.setItem("avatar-token", page.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (page.avatar) $("avatar-id-text").value = page.avatar;
  const mic = query.get("mic");
  if (mic === "listen" || mic === "puppet") await page.setMic(mic);
  if (await loadInfo() && query.get("autostart") === "1") page.start();
})();
