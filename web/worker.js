// The Web Worker that runs the model, so the page never freezes: the WebAssembly build of
// crates/ddpm-web (written into pkg/ by `cargo xtask web`).
import init, { WebDemo } from './pkg/ddpm_web.js';

const ready = init();
let demo = null;

function fail(during, error) {
  postMessage({ type: 'error', during, message: String(error && error.message ? error.message : error) });
}

const handlers = {
  load({ manifest, weights, name }) {
    const loaded = new WebDemo(new Uint8Array(manifest), new Uint8Array(weights), name);
    if (demo) demo.free();
    demo = loaded;
    postMessage({
      type: 'loaded',
      name,
      info: JSON.parse(demo.info()),
      schedule: JSON.parse(demo.schedule()),
    });
  },

  grid({ request }) {
    const stepMs = [];
    const start = performance.now();
    let last = start;
    const samples = demo.grid(JSON.stringify(request), (done, total, t, rgba) => {
      const now = performance.now();
      stepMs.push(now - last);
      last = now;
      postMessage({ type: 'step', done, total, t, rgba, ms: stepMs[stepMs.length - 1] }, [rgba.buffer]);
    });
    const totalMs = performance.now() - start;
    postMessage({ type: 'done', request, samples, stepMs, totalMs }, [samples.buffer]);
  },

  noise({ digit, t, seed }) {
    const [x0, xt] = demo.noised_digit(digit, t, BigInt(seed));
    postMessage({ type: 'noised', t, x0, xt }, [x0.buffer, xt.buffer]);
  },
};

onmessage = async ({ data }) => {
  try {
    await ready;
    if (data.type !== 'load' && !demo) throw new Error('no model is loaded');
    handlers[data.type](data);
  } catch (error) {
    fail(data.type, error);
  }
};
