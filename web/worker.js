// A Web Worker that runs the model, so the page never freezes: the WebAssembly build of
// crates/ddpm-web (written into pkg/ by `cargo xtask web`). The page starts several of them;
// each draws its band of the grid's rows (part `part` of `parts`).
import init, { WebDemo } from './pkg/ddpm_web.js';

const ready = init();
let demo = null;

function fail(during, error, draw) {
  postMessage({ type: 'error', during, draw, message: String(error && error.message ? error.message : error) });
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

  grid({ request, draw, part, parts }) {
    const [firstRow] = WebDemo.grid_rows(part, parts);
    const samples = demo.grid(JSON.stringify(request), part, parts, (done, total, t, rgba) => {
      postMessage({ type: 'step', draw, part, firstRow, done, total, t, rgba }, [rgba.buffer]);
    });
    postMessage({ type: 'done', draw, part, samples }, [samples.buffer]);
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
    fail(data.type, error, data.draw);
  }
};
