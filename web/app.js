// The page: controls, canvases and the workers' messages. Every computation runs in
// worker.js; this thread only paints.
const $ = (id) => document.getElementById(id);
const GRID_SIDE = 4;

// Several workers draw one grid together, each a band of its rows: one per core, at most one
// per row (?workers=N chooses). Each loads the model; the first also noises the digit.
function workerCount() {
  const asked = Number(new URLSearchParams(location.search).get('workers'));
  const wanted = Number.isInteger(asked) && asked > 0 ? asked : (navigator.hardwareConcurrency || 1);
  return Math.max(1, Math.min(GRID_SIDE, wanted));
}
const workers = Array.from({ length: workerCount() }, () => new Worker('worker.js', { type: 'module' }));

let info = null;
let schedule = [];
let drawing = null; // the grid being drawn: { id, request, reached, done, stepMs, start, last, parts }
let draws = 0;
let loading = null; // { pending, loaded, error }

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

function paint(canvas, width, height, rgba) {
  canvas.width = width;
  canvas.height = height;
  canvas.getContext('2d').putImageData(new ImageData(rgba, width, height), 0, 0);
}

function selectedDigit() {
  const value = $('digit').value;
  return value === 'any' ? null : Number(value);
}

// Guidance needs a class: "any" digit is the network's unconditional output.
function guidanceApplies() {
  $('guidance').disabled = selectedDigit() === null;
}

function samplerTakesSteps() {
  return $('sampler').value !== 'ddpm';
}

function fillControls() {
  const digit = $('digit');
  digit.length = 1;
  info.classes.forEach((name, label) => digit.add(new Option(name, String(label))));
  if (info.classes.length > 7) digit.value = '7';
  const sampler = $('sampler');
  sampler.length = 0;
  info.samplers.forEach((name) => sampler.add(new Option(name, name)));
  sampler.value = info.sampler.kind === 'ddpm' ? 'ddim' : info.sampler.kind;
  $('steps').value = '20';
  $('guidance').value = String(info.guidance);
  guidanceApplies();
  $('steps').disabled = !samplerTakesSteps();
  const t = $('t');
  t.max = String(info.n_steps - 1);
  t.value = String(Math.floor(info.n_steps / 2));
  t.disabled = false;
}

function fillSchedule() {
  const body = $('schedule-table').tBodies[0];
  body.replaceChildren(...schedule.map((row) => {
    const tr = document.createElement('tr');
    for (const value of [row.t, row.beta, row.alpha, row.alpha_bar, row.sigma]) {
      const td = document.createElement('td');
      td.textContent = Number.isInteger(value) ? String(value) : value.toFixed(5);
      tr.append(td);
    }
    return tr;
  }));
  plotSchedule();
}

function plotSchedule(now) {
  const canvas = $('schedule-plot');
  const g = canvas.getContext('2d');
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  const last = Math.max(schedule.length - 1, 1);
  const x = (t) => 30 + (t / last) * (width - 40);
  const y = (v) => height - 20 - v * (height - 30);
  g.strokeStyle = '#999';
  g.strokeRect(30, 10, width - 40, height - 30);
  g.fillStyle = '#333';
  g.font = '11px sans-serif';
  g.fillText('0', 20, height - 18);
  g.fillText('1', 20, 16);
  g.fillText(`t = 0 … ${last}`, width / 2 - 30, height - 4);
  const maxBeta = Math.max(...schedule.map((r) => r.beta));
  const series = [
    ['ᾱ', '#1f77b4', (r) => r.alpha_bar],
    ['σ', '#d62728', (r) => r.sigma],
    [`β (×${(1 / maxBeta).toFixed(0)})`, '#2ca02c', (r) => r.beta / maxBeta],
  ];
  series.forEach(([name, colour, value], i) => {
    g.strokeStyle = colour;
    g.beginPath();
    schedule.forEach((r, k) => (k ? g.lineTo : g.moveTo).call(g, x(r.t), y(value(r))));
    g.stroke();
    g.fillStyle = colour;
    g.fillText(name, width - 80, 24 + 14 * i);
  });
  if (now !== undefined) {
    g.strokeStyle = '#000';
    g.beginPath();
    g.moveTo(x(now), 10);
    g.lineTo(x(now), height - 20);
    g.stroke();
  }
}

function showStep(t) {
  const row = schedule[t];
  $('t-value').textContent = String(t);
  $('beta').textContent = row.beta.toFixed(5);
  $('alpha').textContent = row.alpha.toFixed(5);
  $('alpha-bar').textContent = row.alpha_bar.toFixed(5);
  $('sigma').textContent = row.sigma.toFixed(5);
  const rows = $('schedule-table').tBodies[0].rows;
  for (const tr of rows) tr.classList.remove('now');
  rows[t].classList.add('now');
  plotSchedule(t);
}

function requestNoise() {
  if (!info) return;
  const t = Number($('t').value);
  showStep(t);
  workers[0].postMessage({ type: 'noise', digit: selectedDigit() ?? undefined, t, seed: Number($('seed').value) });
}

function gridRequest() {
  const seed = Number($('seed').value);
  const steps = Number($('steps').value);
  const guidance = Number($('guidance').value);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error('the seed must be a whole number ≥ 0');
  if (samplerTakesSteps() && (!Number.isInteger(steps) || steps < 1 || steps > info.n_steps)) {
    throw new Error(`the number of steps must be a whole number from 1 to ${info.n_steps}`);
  }
  if (!(guidance >= 0)) throw new Error('the guidance scale must be a number ≥ 0');
  return {
    class: selectedDigit(),
    sampler: $('sampler').value,
    steps: samplerTakesSteps() ? steps : null,
    guidance,
    seed,
  };
}

function draw() {
  clearError();
  let request;
  try {
    request = gridRequest();
  } catch (error) {
    showError(error.message);
    return;
  }
  $('draw').disabled = true;
  $('progress').value = 0;
  $('grid-status').textContent = 'starting…';
  window.ddpmResult = undefined;
  const grid = $('grid');
  grid.width = info.image[2] * GRID_SIDE;
  grid.height = info.image[1] * GRID_SIDE;
  const start = performance.now();
  draws += 1;
  drawing = {
    id: draws,
    request,
    reached: workers.map(() => 0),
    done: 0,
    stepMs: [],
    start,
    last: start,
    parts: workers.map(() => null),
  };
  workers.forEach((worker, part) =>
    worker.postMessage({ type: 'grid', request, draw: draws, part, parts: workers.length }));
}

function finishDraw() {
  drawing = null;
  $('draw').disabled = !info;
}

function loadCheckpoint(manifest, weights, name) {
  $('draw').disabled = true;
  $('model-status').textContent = `Loading ${name}…`;
  loading = { pending: workers.length, loaded: null, error: null };
  for (const worker of workers) {
    const [m, w] = [manifest.slice(0), weights.slice(0)];
    worker.postMessage({ type: 'load', manifest: m, weights: w, name }, [m, w]);
  }
}

// Every worker answers a load; the page changes model once all have.
function loadAnswered() {
  loading.pending -= 1;
  if (loading.pending > 0) return;
  const { loaded, error } = loading;
  loading = null;
  if (error) {
    $('model-status').textContent = info ? 'The previous model is still loaded.' : 'No model loaded.';
    $('draw').disabled = !info || drawing !== null;
    showError(`Cannot load this checkpoint: ${error}`);
  } else {
    modelLoaded(loaded);
  }
}

async function loadDefault() {
  const fetched = async (path) => {
    const response = await fetch(path);
    if (!response.ok) throw new Error(`cannot fetch ${path}: HTTP ${response.status}`);
    return response.arrayBuffer();
  };
  try {
    loadCheckpoint(await fetched('model/manifest.json'), await fetched('model/model.safetensors'), 'the default model');
  } catch (error) {
    showError(error.message);
  }
}

async function loadFiles(files) {
  clearError();
  const list = [...files];
  const manifest = list.find((f) => f.name.endsWith('.json'));
  const weights = list.find((f) => f.name.endsWith('.safetensors'));
  if (!manifest || !weights) {
    showError('choose two files together: the checkpoint\'s manifest.json and its .safetensors weights (e.g. ema.safetensors)');
    return;
  }
  loadCheckpoint(await manifest.arrayBuffer(), await weights.arrayBuffer(), weights.name);
}

function modelLoaded(message) {
  info = message.info;
  schedule = message.schedule;
  const kind = info.classes.length ? `conditional on ${info.classes.length} classes` : 'unconditional';
  $('model-status').textContent = `Model: ${message.name} — ${info.parameters.toLocaleString()} parameters, ` +
    `${info.image.join('×')} images, T = ${info.n_steps}, ${kind}.`;
  fillControls();
  fillSchedule();
  requestNoise();
  $('draw').disabled = false;
  if (autorun) {
    autorun = null;
    applyParamsAndDraw(new URLSearchParams(location.search));
  }
}

const onMessage = {
  loaded(message) {
    loading.loaded ??= message;
    loadAnswered();
  },

  // A band of rows after one step; the step counts as done once every band has reached it.
  step({ draw, part, firstRow, done, total, t, rgba }) {
    if (!drawing || draw !== drawing.id) return;
    const width = info.image[2] * GRID_SIDE;
    const rows = new ImageData(rgba, width, rgba.length / 4 / width);
    $('grid').getContext('2d').putImageData(rows, 0, firstRow * info.image[1]);
    drawing.reached[part] = done;
    const now = performance.now();
    while (drawing.done < Math.min(...drawing.reached)) {
      drawing.done += 1;
      drawing.stepMs.push(now - drawing.last);
      drawing.last = now;
      $('progress').max = total;
      $('progress').value = drawing.done;
      $('grid-status').textContent = `step ${drawing.done}/${total} (t = ${t.toFixed(1)}), ` +
        `${drawing.stepMs[drawing.stepMs.length - 1].toFixed(1)} ms this step`;
    }
  },

  done({ draw, part, samples }) {
    if (!drawing || draw !== drawing.id) return;
    drawing.parts[part] = samples;
    if (drawing.parts.includes(null)) return;
    const { request, stepMs, start, parts } = drawing;
    const totalMs = performance.now() - start;
    finishDraw();
    const mean = stepMs.reduce((a, b) => a + b, 0) / stepMs.length;
    $('grid-status').textContent = `${stepMs.length} steps in ${(totalMs / 1000).toFixed(2)} s: ` +
      `${mean.toFixed(1)} ms per step (${GRID_SIDE}×${GRID_SIDE} grid, ${workers.length} ` +
      `worker${workers.length > 1 ? 's' : ''})`;
    const joined = parts.flatMap((p) => Array.from(p));
    window.ddpmResult = { request, samples: joined, stepMs, totalMs, workers: workers.length };
  },

  noised({ x0, xt }) {
    paint($('x0'), info.image[2], info.image[1], x0);
    paint($('xt'), info.image[2], info.image[1], xt);
  },

  error({ during, draw, message }) {
    if (during === 'load') {
      loading.error ??= message;
      loadAnswered();
      return;
    }
    if (during === 'grid') {
      if (!drawing || draw !== drawing.id) return;
      finishDraw();
      $('grid-status').textContent = 'failed';
      window.ddpmResult = { error: message };
    }
    $('draw').disabled = !info || drawing !== null;
    showError(`Error: ${message}`);
  },
};

// ?autorun&digit=7&sampler=ddim&steps=20&guidance=5&seed=3 draws that grid once the model is
// loaded (the browser test drives the page this way).
let autorun = new URLSearchParams(location.search).has('autorun');
function applyParamsAndDraw(params) {
  for (const id of ['digit', 'sampler', 'steps', 'guidance', 'seed']) {
    if (params.has(id)) $(id).value = params.get(id);
  }
  $('steps').disabled = !samplerTakesSteps();
  guidanceApplies();
  requestNoise();
  draw();
}

for (const worker of workers) {
  worker.onmessage = ({ data }) => onMessage[data.type](data);
  worker.onerror = (event) => showError(`A worker failed: ${event.message}`);
}
$('grid-form').addEventListener('submit', (event) => {
  event.preventDefault();
  draw();
});
$('sampler').addEventListener('change', () => { $('steps').disabled = !samplerTakesSteps(); });
$('t').addEventListener('input', requestNoise);
$('digit').addEventListener('change', () => {
  guidanceApplies();
  requestNoise();
});
$('seed').addEventListener('change', requestNoise);
$('checkpoint-files').addEventListener('change', (event) => loadFiles(event.target.files));
loadDefault();
