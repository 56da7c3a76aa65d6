//! The JavaScript interface of [`Demo`] (wasm32 only): JSON in and out for descriptions,
//! typed arrays for pixels and samples.

use js_sys::{Float32Array, Function, Uint8ClampedArray, Uint32Array};
use wasm_bindgen::prelude::*;

use crate::{Demo, GridPart, GridRequest, Picture, WebError, grid_picture};

fn js_error(e: impl Into<WebError>) -> JsError {
    JsError::new(&e.into().to_string())
}

/// A loaded model, for the Web Worker.
#[wasm_bindgen]
pub struct WebDemo(Demo);

#[wasm_bindgen]
impl WebDemo {
    /// Loads a checkpoint: the bytes of its `manifest.json` and of its safetensors weights
    /// (`weights_name` names the file in errors).
    #[wasm_bindgen(constructor)]
    pub fn new(manifest: &[u8], weights: &[u8], weights_name: &str) -> Result<WebDemo, JsError> {
        Demo::from_bytes(manifest, weights, weights_name)
            .map(WebDemo)
            .map_err(js_error)
    }

    /// [`Demo::info`] as JSON.
    pub fn info(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.0.info()).map_err(js_error)
    }

    /// [`Demo::schedule_rows`] as JSON.
    pub fn schedule(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.0.schedule_rows()).map_err(js_error)
    }

    /// The grid rows `[first, end)` of part `part` of `parts` ([`GridPart::rows`]).
    pub fn grid_rows(part: usize, parts: usize) -> Result<Uint32Array, JsError> {
        let rows = GridPart {
            index: part,
            count: parts,
        }
        .rows()
        .map_err(js_error)?;
        Ok(Uint32Array::from(
            [rows.start as u32, rows.end as u32].as_slice(),
        ))
    }

    /// Draws part `part` of `parts` of the grid of `request` (a [`GridRequest`] as JSON),
    /// calling `on_step(done, total, t, rgba)` after every step with the part's pixels;
    /// returns the part's final samples (N·C·H·W floats in [-1, 1]).
    pub fn grid(
        &self,
        request: &str,
        part: usize,
        parts: usize,
        on_step: &Function,
    ) -> Result<Float32Array, JsError> {
        let request: GridRequest = serde_json::from_str(request).map_err(js_error)?;
        let part = GridPart {
            index: part,
            count: parts,
        };
        let mut failure: Option<JsValue> = None;
        let x0 = self
            .0
            .grid(&request, part, |info| {
                if failure.is_some() {
                    return;
                }
                let sent = grid_picture(info.x)
                    .map_err(|e| JsValue::from(js_error(e)))
                    .and_then(|picture| {
                        let args = js_sys::Array::of4(
                            &JsValue::from(info.done as u32),
                            &JsValue::from(info.total as u32),
                            &JsValue::from(info.t),
                            &Uint8ClampedArray::from(picture.rgba.as_slice()),
                        );
                        on_step.apply(&JsValue::NULL, &args)
                    });
                failure = sent.err();
            })
            .map_err(js_error)?;
        if let Some(e) = failure {
            return Err(JsError::new(&format!("the step callback failed: {e:?}")));
        }
        let values = x0
            .flatten_all()
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(js_error)?;
        Ok(Float32Array::from(values.as_slice()))
    }

    /// The first embedded digit of `class` (`undefined`: any) noised at timestep `t` with noise
    /// from `seed`: `[x0, x_t]` as RGBA pixels.
    pub fn noised_digit(
        &self,
        class: Option<u32>,
        t: usize,
        seed: u64,
    ) -> Result<js_sys::Array, JsError> {
        let noised = self.0.noised_digit(class, t, seed).map_err(js_error)?;
        let pixels = |p: &Picture| Uint8ClampedArray::from(p.rgba.as_slice());
        Ok(js_sys::Array::of2(
            &pixels(&noised.x0),
            &pixels(&noised.x_t),
        ))
    }
}
