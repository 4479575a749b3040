// tddfa web page: upload or webcam → /v1/align (or /v1/live) → landmarks and pose drawn on the
// photo, server renders by kind, one interactive 3-D viewer per face (GLB from /v1/export).
import {
  Scene, PerspectiveCamera, WebGLRenderer, AmbientLight, DirectionalLight, Color, Box3, Vector3,
  GLTFLoader, OrbitControls,
} from './vendor/three-viewer.min.js';

const $ = (id) => document.getElementById(id);
const state = { blob: null, result: null, kind: 'overlay', viewers: [], live: null, stream: null };

// ---- HTTP ------------------------------------------------------------------------------------
function headers(extra = {}) {
  const h = { ...extra };
  const t = $('token').value.trim();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function post(path, blob) {
  const r = await fetch(path, {
    method: 'POST', body: blob,
    headers: headers({ 'Content-Type': blob.type || 'application/octet-stream' }),
  });
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { const e = await r.json(); msg = `${r.status}: ${e.error.message}`; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return r;
}

function setStatus(text, error = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', error);
}

const refineQ = () => ($('refine').checked ? '&refine=true' : '');
// renders and exports reuse the detected boxes: the server skips detection and gets the same faces
const boxesQ = () => {
  const faces = state.result ? state.result.faces : [];
  return faces.length ? `&boxes=${encodeURIComponent(JSON.stringify(faces.map((f) => [...f.box, f.score])))}` : '';
};

// ---- drawing landmarks and pose on the photo -------------------------------------------------
const CONTOURS = [[0, 17, false], [17, 22, false], [22, 27, false], [27, 31, false], [31, 36, false],
  [36, 42, true], [42, 48, true], [48, 60, true], [60, 68, true]];

function drawFaces(ctx, faces, scale = 1) {
  const lw = Math.max(1.5, 2 * scale);
  faces.forEach((f, i) => {
    const lm = f.landmarks;
    ctx.lineWidth = lw;
    ctx.strokeStyle = '#ffffffb0';
    for (const [a, b, closed] of CONTOURS) {
      ctx.beginPath();
      ctx.moveTo(lm[a][0], lm[a][1]);
      for (let k = a + 1; k < b; k++) ctx.lineTo(lm[k][0], lm[k][1]);
      if (closed) ctx.closePath();
      ctx.stroke();
    }
    ctx.fillStyle = '#4ade80';
    for (const p of lm) { ctx.beginPath(); ctx.arc(p[0], p[1], 1.6 * lw, 0, 2 * Math.PI); ctx.fill(); }
    // pose axes from the nose tip: rows of [sR|t] in the crop frame (y up) → image (y down)
    const P = f.param;
    const r = [[P[0], P[1], P[2]], [P[4], P[5], P[6]]];
    const n0 = Math.hypot(...r[0]);
    const size = 0.5 * Math.max(f.box[2] - f.box[0], f.box[3] - f.box[1]);
    const nose = lm[30];
    ['#ef4444', '#22c55e', '#3b82f6'].forEach((color, k) => {
      const dx = (r[0][k] / n0) * size;
      const dy = (-r[1][k] / n0) * size;
      ctx.strokeStyle = color;
      ctx.lineWidth = 2 * lw;
      ctx.beginPath(); ctx.moveTo(nose[0], nose[1]); ctx.lineTo(nose[0] + dx, nose[1] + dy); ctx.stroke();
    });
    ctx.strokeStyle = '#facc15';
    ctx.lineWidth = lw;
    ctx.strokeRect(f.box[0], f.box[1], f.box[2] - f.box[0], f.box[3] - f.box[1]);
    const p = f.pose;
    ctx.font = `${Math.round(14 * Math.max(1, scale))}px system-ui, sans-serif`;
    const label = `#${f.track_id ?? i}  yaw ${p.yaw.toFixed(0)}°  pitch ${p.pitch.toFixed(0)}°  roll ${p.roll.toFixed(0)}°`;
    const y = Math.max(16 * scale, f.box[1] - 6);
    ctx.fillStyle = '#000a';
    ctx.fillRect(f.box[0], y - 16 * scale, ctx.measureText(label).width + 8, 20 * scale);
    ctx.fillStyle = '#fff';
    ctx.fillText(label, f.box[0] + 4, y);
  });
}

async function showOverlay() {
  const bmp = await createImageBitmap(state.blob);
  const c = $('photo');
  c.width = bmp.width; c.height = bmp.height;
  const ctx = c.getContext('2d');
  ctx.drawImage(bmp, 0, 0);
  drawFaces(ctx, state.result.faces, Math.max(1, bmp.width / 800));
  c.hidden = false; $('render').hidden = true;
}

async function showKind(kind) {
  state.kind = kind;
  for (const b of document.querySelectorAll('#kinds button')) b.classList.toggle('active', b.dataset.kind === kind);
  if (!state.blob || !state.result) return;
  if (kind === 'overlay') return showOverlay();
  setStatus(`rendering ${kind}…`);
  try {
    const r = await post(`/v1/render?kind=${kind}${refineQ()}${boxesQ()}`, state.blob);
    const img = $('render');
    if (img.src) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(await r.blob());
    await img.decode();
    img.hidden = false; $('photo').hidden = true;
    setStatus(facesText(state.result.faces.length));
  } catch (e) { setStatus(`render failed: ${e.message}`, true); }
}

// ---- 3-D viewers -----------------------------------------------------------------------------
function disposeViewers() {
  for (const v of state.viewers) { v.stop = true; v.controls.dispose(); v.renderer.dispose(); }
  state.viewers = [];
  $('faces').replaceChildren();
}

async function addViewer(container, i) {
  const renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const w = container.clientWidth || 320;
  renderer.setSize(w, w, false);
  container.appendChild(renderer.domElement);
  renderer.domElement.dataset.face = String(i);
  const scene = new Scene();
  scene.background = new Color(0x20242c);
  scene.add(new AmbientLight(0xffffff, 1.6));
  const sun = new DirectionalLight(0xffffff, 1.8);
  sun.position.set(0.3, 0.4, 1);
  scene.add(sun);
  const camera = new PerspectiveCamera(35, 1, 0.1, 1e5);
  const controls = new OrbitControls(camera, renderer.domElement);
  const v = { renderer, controls, stop: false };
  state.viewers.push(v);

  const r = await post(`/v1/export?format=glb&face=${i}&frame=centered_yup${refineQ()}${boxesQ()}`, state.blob);
  const gltf = await new GLTFLoader().parseAsync(await r.arrayBuffer(), '');
  scene.add(gltf.scene);
  const box = new Box3().setFromObject(gltf.scene);
  const size = box.getSize(new Vector3()).length();
  const centre = box.getCenter(new Vector3());
  camera.position.copy(centre).add(new Vector3(0, 0, size * 1.6));
  camera.near = size / 100; camera.far = size * 100; camera.updateProjectionMatrix();
  controls.target.copy(centre);
  controls.minDistance = size * 0.3; controls.maxDistance = size * 6;
  controls.update();
  // draw on demand (orbit / zoom), not in a loop: software WebGL stays cheap when idle
  let queued = false;
  const draw = () => { queued = false; if (!v.stop) renderer.render(scene, camera); };
  controls.addEventListener('change', () => { if (!queued) { queued = true; requestAnimationFrame(draw); } });
  renderer.render(scene, camera);
  container.dataset.ready = '1';
}

async function download(path, name) {
  try {
    const blob = path === 'json'
      ? new Blob([JSON.stringify(state.result, null, 1)], { type: 'application/json' })
      : await (await post(path, state.blob)).blob();
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 5000);
  } catch (e) { setStatus(`download failed: ${e.message}`, true); }
}

function faceCard(f, i) {
  const card = document.createElement('article');
  card.className = 'face';
  const p = f.pose;
  card.innerHTML = `<h2>Face ${i} <small>score ${f.score.toFixed(2)} · yaw ${p.yaw.toFixed(1)}° ` +
    `pitch ${p.pitch.toFixed(1)}° roll ${p.roll.toFixed(1)}°</small></h2>` +
    '<div class="viewer" title="drag to orbit, wheel to zoom"></div><div class="row"></div>';
  const row = card.querySelector('.row');
  for (const fmt of ['glb', 'obj', 'ply']) {
    const b = document.createElement('button');
    b.type = 'button'; b.textContent = `⬇ ${fmt.toUpperCase()}`;
    b.onclick = () => download(`/v1/export?format=${fmt}&face=${i}${refineQ()}${boxesQ()}`, `face${i}.${fmt}`);
    row.appendChild(b);
  }
  const j = document.createElement('button');
  j.type = 'button'; j.textContent = '⬇ JSON';
  j.onclick = () => download('json', 'faces.json');
  row.appendChild(j);
  return card;
}

const facesText = (n) => (n === 1 ? '1 face' : `${n} faces`);

// ---- one photo -------------------------------------------------------------------------------
async function analyse(blob) {
  stopLive();
  state.blob = blob;
  state.result = null;
  disposeViewers();
  $('status').dataset.faces = '';
  setStatus('aligning…');
  try {
    const r = await post(`/v1/align?${refineQ().slice(1)}`, blob);
    state.result = await r.json();
  } catch (e) { setStatus(`align failed: ${e.message}`, true); return; }
  const faces = state.result.faces;
  await showKind(state.kind);
  setStatus(`${facesText(faces.length)} — loading 3-D meshes…`);
  const cards = faces.map((f, i) => faceCard(f, i));
  $('faces').replaceChildren(...cards);
  try {
    await Promise.all(cards.map((c, i) => addViewer(c.querySelector('.viewer'), i)));
    setStatus(faces.length ? `${facesText(faces.length)} — drag a mesh to orbit, scroll to zoom`
      : 'no face found');
  } catch (e) { setStatus(`3-D viewer failed: ${e.message}`, true); }
  $('status').dataset.faces = String(faces.length);
}

// ---- webcam ----------------------------------------------------------------------------------
async function camera() {
  if (!state.stream) {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
    $('video').srcObject = state.stream;
    await $('video').play();
  }
  return $('video');
}

function frameBlob(video, canvas) {
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  return new Promise((res) => canvas.toBlob(res, 'image/jpeg', 0.85));
}

async function snapshot() {
  try {
    const v = await camera();
    const blob = await frameBlob(v, document.createElement('canvas'));
    stopCamera();
    await analyse(blob);
  } catch (e) { setStatus(`webcam: ${e.message}`, true); }
}

function stopCamera() {
  if (state.stream && !state.live) { for (const t of state.stream.getTracks()) t.stop(); state.stream = null; }
}

function stopLive() {
  if (!state.live) return;
  state.live.stop = true;
  state.live = null;
  $('live').textContent = 'Start live';
  stopCamera();
}

async function startLive() {
  let v;
  try { v = await camera(); } catch (e) { setStatus(`webcam: ${e.message}`, true); return; }
  disposeViewers();
  const session = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
  const live = { stop: false };
  state.live = live;
  $('live').textContent = 'Stop live';
  const grab = document.createElement('canvas');
  const c = $('photo');
  c.hidden = false; $('render').hidden = true;
  const t0 = performance.now();
  let frames = 0;
  $('status').dataset.liveFrames = '0';
  while (!live.stop) {
    const t = performance.now() - t0;     // frame timestamp in ms, increasing
    const blob = await frameBlob(v, grab);
    try {
      const r = await post(`/v1/live?session=${session}&t=${t.toFixed(1)}`, blob);
      const res = await r.json();
      if (live.stop) break;
      c.width = grab.width; c.height = grab.height;
      const ctx = c.getContext('2d');
      ctx.drawImage(grab, 0, 0);
      drawFaces(ctx, res.faces);
      frames += 1;
      $('status').dataset.liveFrames = String(frames);
      $('status').dataset.liveFaces = String(res.faces.length);
      const fps = (1000 * frames) / (performance.now() - t0);
      setStatus(`live: ${facesText(res.faces.length)}, ${fps.toFixed(1)} frames/s`);
    } catch (e) {
      setStatus(`live: ${e.message}`, true);
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
}

// ---- wiring ----------------------------------------------------------------------------------
function init() {
  const tok = sessionStorage.getItem('tddfa-token');
  if (tok) $('token').value = tok;
  $('token').addEventListener('change', () => sessionStorage.setItem('tddfa-token', $('token').value));
  $('file').addEventListener('change', (e) => { if (e.target.files[0]) analyse(e.target.files[0]); });
  const drop = $('drop');
  drop.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') $('file').click(); });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault(); drop.classList.remove('over');
    const f = e.dataTransfer.files[0];
    if (f) analyse(f);
  });
  for (const b of document.querySelectorAll('#kinds button')) b.onclick = () => showKind(b.dataset.kind);
  $('snap').onclick = snapshot;
  $('live').onclick = () => (state.live ? stopLive() : startLive());
  if (!navigator.mediaDevices) { $('snap').disabled = true; $('live').disabled = true; }
}

init();
