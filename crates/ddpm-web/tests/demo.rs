//! The demo's engine on the committed default model (web/model/), natively.

use ddpm_diffusion::{NoiseRng, generate};
use ddpm_run::checkpoint;
use ddpm_web::{Demo, GRID_SIDE, GridPart, GridRequest, WebError, grid_picture};

const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/model");

fn model_files() -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str| std::fs::read(format!("{MODEL_DIR}/{name}")).unwrap();
    (
        read(checkpoint::MANIFEST_FILE),
        read(checkpoint::MODEL_FILE),
    )
}

fn demo() -> Demo {
    let (manifest, weights) = model_files();
    Demo::from_bytes(&manifest, &weights, checkpoint::MODEL_FILE).unwrap()
}

fn request(class: Option<u32>, sampler: &str, steps: Option<usize>) -> GridRequest {
    GridRequest {
        class,
        sampler: sampler.into(),
        steps,
        guidance: 3.0,
        seed: 5,
    }
}

#[test]
fn the_default_model_is_the_conditional_quick_preset() {
    let info = demo().info();
    assert_eq!(info.classes.len(), 10);
    assert_eq!(info.image, [1, 28, 28]);
    assert_eq!(info.n_steps, 100);
    assert!(info.samplers.contains(&"ddim"));
}

#[test]
fn the_grid_is_the_one_generate_draws_with_the_same_seed() {
    let demo = demo();
    let wanted = request(Some(3), "ddim", Some(2));
    let mut steps = Vec::new();
    let x0 = demo
        .grid(&wanted, GridPart::WHOLE, |info| steps.push(info.done))
        .unwrap();
    assert_eq!(steps, [1, 2]);
    assert_eq!(x0.dims(), [GRID_SIDE * GRID_SIDE, 1, 28, 28]);

    let (manifest, _) = model_files();
    let loaded = checkpoint::load_model(MODEL_DIR.as_ref(), &candle_core::Device::Cpu, true);
    let loaded = loaded.unwrap();
    let manifest = checkpoint::manifest_from_bytes(&manifest, "manifest.json").unwrap();
    let direct = generate(
        &loaded.model,
        &manifest.schedule(&candle_core::Device::Cpu).unwrap(),
        &wanted.options(&manifest).unwrap(),
        None,
        &mut NoiseRng::new(wanted.seed),
        &candle_core::Device::Cpu,
        |_, _| {},
    )
    .unwrap();
    let (a, b) = (
        x0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        direct.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a, b);
    let picture = grid_picture(&x0).unwrap();
    assert_eq!((picture.width, picture.height), (112, 112));
    assert_eq!(picture.rgba.len(), 112 * 112 * 4);
}

#[test]
fn requests_follow_the_samplers_rules() {
    let (manifest, _) = model_files();
    let manifest = checkpoint::manifest_from_bytes(&manifest, "manifest.json").unwrap();
    let any = request(None, "dpm++", Some(7)).options(&manifest).unwrap();
    assert!(any.guidance.is_none(), "any digit is drawn unguided");
    assert_eq!(any.sampler.timesteps(100).unwrap().len(), 7);
    let seven = request(Some(7), "ddim", Some(20))
        .options(&manifest)
        .unwrap();
    assert_eq!(seven.guidance.unwrap().classes, vec![7; 16]);
    let err = request(Some(1), "ddpm", Some(20)).options(&manifest);
    assert!(err.unwrap_err().to_string().contains("--steps"));
    let err = request(Some(1), "magic", None).options(&manifest);
    assert!(err.is_err());
}

#[test]
fn a_broken_checkpoint_is_refused_with_a_message() {
    let (manifest, weights) = model_files();
    let corrupt = Demo::from_bytes(&manifest, &weights[..weights.len() / 2], "mine.safetensors");
    let message = corrupt.err().unwrap().to_string();
    assert!(message.contains("mine.safetensors"), "{message}");
    let garbled = Demo::from_bytes(b"{\"model\": 3}", &weights, "mine.safetensors");
    assert!(matches!(garbled, Err(WebError::Run(_))));
    let message = garbled.err().unwrap().to_string();
    assert!(message.contains("manifest.json"), "{message}");
}

#[test]
fn the_forward_process_noises_a_real_digit() {
    let demo = demo();
    let clean = demo.noised_digit(Some(4), 0, 1).unwrap();
    let noisy = demo.noised_digit(Some(4), 99, 1).unwrap();
    assert_eq!(clean.x0, noisy.x0);
    let differing = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    assert!(
        differing(&clean.x0.rgba, &clean.x_t.rgba) < differing(&noisy.x0.rgba, &noisy.x_t.rgba)
    );
    assert!(
        noisy.row.sigma > 0.99 && clean.row.sigma < 0.1,
        "{:?}",
        noisy.row
    );
    assert!(demo.noised_digit(None, 100, 1).is_err());
    let rows = demo.schedule_rows();
    assert_eq!(rows.len(), 100);
    assert!(rows.windows(2).all(|w| w[1].alpha_bar < w[0].alpha_bar));
}

#[test]
fn parts_of_the_grid_are_its_rows_drawn_as_the_whole_grid_draws_them() {
    let demo = demo();
    // DDIM with eta = 1 draws fresh noise at every step, so each part must take its rows of
    // every whole-batch draw; guidance runs the network on cond + uncond halves.
    let wanted = GridRequest {
        guidance: 5.0,
        ..request(Some(7), "ddim", Some(3))
    };
    let values = |x: candle_core::Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let whole = values(demo.grid(&wanted, GridPart::WHOLE, |_| {}).unwrap());
    let per_row = whole.len() / GRID_SIDE;
    for count in 2..=GRID_SIDE {
        let mut joined = Vec::new();
        let mut rows_seen = Vec::new();
        // Rows 0..R in order, each part its own band.
        for index in 0..count {
            let part = GridPart { index, count };
            let rows = part.rows().unwrap();
            rows_seen.extend(rows.clone());
            let mut pictures = Vec::new();
            let x0 = demo
                .grid(&wanted, part, |info| {
                    pictures.push(grid_picture(info.x).unwrap())
                })
                .unwrap();
            assert_eq!(pictures.len(), 3);
            assert_eq!(pictures[0].height as usize, rows.len() * 28);
            joined.extend(values(x0));
        }
        assert_eq!(
            rows_seen,
            (0..GRID_SIDE).collect::<Vec<_>>(),
            "{count} parts"
        );
        assert_eq!(joined.len(), whole.len());
        let worst = joined
            .iter()
            .zip(&whole)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Not bit-identical: the convolutions' matrix products group the samples by batch size,
        // so a part sums in another order (measured 6.2e-5, 8.1e-5, 8.1e-5 for 2, 3, 4 parts; guidance
        // w = 5 and the first steps' 1/sqrt(alpha_bar) amplify the network's ~1e-6 difference).
        assert!(
            worst < 2e-4,
            "{count} parts: samples differ by {worst} ({per_row} values per row)"
        );
    }
    for (index, count) in [(0, 0), (2, 2), (0, GRID_SIDE + 1)] {
        let err = GridPart { index, count }.rows().unwrap_err();
        assert!(err.to_string().contains("1 to 4 parts"), "{err}");
    }
}
