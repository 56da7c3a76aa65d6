//! Colour order, grid geometry, determinism and errors of the picture path.

use candle_core::{Device, Tensor};
use ddpm_diffusion::{
    BetaKind, GenerateOptions, NoiseRng, Prediction, SamplerConfig, Schedule, generate,
};
use ddpm_image::{Trajectory, grid, save_image, to_u8};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-image-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn red_green_blue_survive_the_round_trip_in_that_order() {
    // Three 2x2 images in [-1, 1]: pure red, pure green, pure blue (channel-first).
    let mut values = vec![-1f32; 3 * 3 * 4];
    for (i, ch) in [0usize, 1, 2].iter().enumerate() {
        for p in 0..4 {
            values[(i * 3 + ch) * 4 + p] = 1.0;
        }
    }
    let x = Tensor::from_vec(values, (3, 3, 2, 2), &Device::Cpu).unwrap();
    let path = temp_dir("rgb").join("rgb.png");
    save_image(&grid(&to_u8(&x).unwrap(), 3, 0).unwrap(), &path).unwrap();
    let back = image::open(&path).unwrap();
    assert!(
        matches!(back, image::DynamicImage::ImageRgb8(_)),
        "written as 8-bit RGB"
    );
    let back = back.to_rgb8();
    assert_eq!(back.dimensions(), (6, 2));
    assert_eq!(back.get_pixel(0, 0).0, [255, 0, 0], "first tile is red");
    assert_eq!(back.get_pixel(2, 1).0, [0, 255, 0], "second tile is green");
    assert_eq!(back.get_pixel(5, 0).0, [0, 0, 255], "third tile is blue");
}

#[test]
fn grids_have_the_reference_geometry() {
    for (c, side, want) in [(1usize, 28usize, 252u32), (3, 64, 576)] {
        let x = Tensor::zeros((81, c, side, side), candle_core::DType::F32, &Device::Cpu).unwrap();
        let g = grid(&to_u8(&x).unwrap(), 9, 0).unwrap();
        assert_eq!((g.width(), g.height()), (want, want));
        assert_eq!(g.color().channel_count() as usize, c);
    }
    let x = Tensor::zeros((6, 1, 4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
    let g = grid(&to_u8(&x).unwrap(), 3, 2).unwrap();
    assert_eq!((g.width(), g.height()), (3 * 5 + 2 * 2, 2 * 4 + 2));
}

#[test]
fn counts_that_do_not_fill_the_rows_are_refused() {
    let x = Tensor::zeros((10, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = grid(&to_u8(&x).unwrap(), 9, 0).unwrap_err().to_string();
    assert!(
        err.contains("10 images") && err.contains("rows of 9"),
        "{err}"
    );
}

fn toy_eps(x: &Tensor, _t: &Tensor) -> candle_core::Result<Tensor> {
    x.affine(0.5, 0.0)?.tanh()
}

#[test]
fn trajectories_are_written_as_strips_and_gifs() {
    let schedule = Schedule::new(BetaKind::Linear, 20, &Device::Cpu).unwrap();
    let opts = GenerateOptions {
        n: 3,
        image: [3, 4, 4],
        batch_size: 3,
        sampler: SamplerConfig::default(),
        prediction: Prediction::Epsilon,
        guidance: None,
    };
    let mut traj = Trajectory::new(2, 5, 20);
    generate(
        &toy_eps,
        &schedule,
        &opts,
        None,
        &mut NoiseRng::new(0),
        &Device::Cpu,
        |_, info| traj.observe(info.done, info.total, info.t, info.x).unwrap(),
    )
    .unwrap();
    assert_eq!(traj.timesteps(), vec![16.0, 12.0, 8.0, 4.0, 0.0]);
    let dir = temp_dir("traj");
    traj.save(&dir.join("t.png")).unwrap();
    let strip = image::open(dir.join("t.png")).unwrap();
    assert_eq!((strip.width(), strip.height()), (5 * 4 + 4 * 2, 2 * 4 + 2));
    traj.save(&dir.join("t.gif")).unwrap();
    assert!(std::fs::metadata(dir.join("t.gif")).unwrap().len() > 0);
}
