//! The trainer on tiny models: learning, exact resume, crash-safe checkpoints, the NaN guard
//! and the presets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use ddpm_data::{batch_tensor, embedded_mnist};
use ddpm_diffusion::{BetaKind, NoiseRng, Schedule};
use ddpm_train::{
    Adam, DatasetSpec, Every, LrSchedule, ModelKind, Overrides, RunOptions, TrainConfig,
    TrainError, WorldInfo, checkpoint, diffusion_loss, optimizer_step, train,
};
use ddpm_unet::{Model, ModelConfig, RefNorm};

fn temp_run(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny reference UNet on the embedded digits, with EMA, warmup and cosine LR on so that
/// every piece of state takes part.
fn tiny(max_steps: u64) -> Overrides {
    Overrides {
        channels: Some(vec![4, 8]),
        pe_dim: Some(8),
        n_steps: Some(50),
        batch_size: Some(16),
        epochs: Some(1),
        max_steps: Some(max_steps),
        ema: Some(0.9),
        warmup_steps: Some(2),
        lr_schedule: Some(LrSchedule::Cosine),
        grad_clip: Some(1.0),
        log_every: Some(2),
        save_every: Some(Every::Steps(3)),
        ..Overrides::default()
    }
}

fn options(out: &Path, resume: bool) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        resume,
        device: Device::Cpu,
        cache_dir: out.join("cache"),
        stop: Arc::new(AtomicBool::new(false)),
        world: WorldInfo::single(),
    }
}

fn config(overrides: &Overrides) -> TrainConfig {
    TrainConfig::resolve("ref-mnist", DatasetSpec::Embedded, overrides).unwrap()
}

#[test]
fn the_loss_decreases_on_a_fixed_batch() {
    let cfg = config(&tiny(1));
    let model = Model::new(&cfg.model, &Device::Cpu, 0).unwrap();
    let schedule = Schedule::new(BetaKind::Linear, 50, &Device::Cpu).unwrap();
    let images = embedded_mnist();
    let indices: Vec<usize> = (0..16).collect();
    let x0 = batch_tensor(&images, &indices, &[false; 16], &Device::Cpu).unwrap();
    let mut adam = Adam::new(model.trainable(), 0.0).unwrap();
    let mut losses = Vec::new();
    for _ in 0..40 {
        // The same t and ε every step: only the weights change.
        let loss = diffusion_loss(&model, &schedule, &x0, &mut NoiseRng::new(3)).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        adam.step(&loss.backward().unwrap(), 3e-3).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last < 0.6 * first,
        "loss went from {first} to {last}: {losses:?}"
    );
}

#[test]
fn a_run_stopped_and_resumed_matches_an_uninterrupted_run_exactly() {
    let straight = temp_run("straight");
    let full = train(&config(&tiny(6)), &options(&straight, false)).unwrap();
    assert_eq!(full.steps, 6);

    let split = temp_run("split");
    let first = train(&config(&tiny(3)), &options(&split, false)).unwrap();
    let mut resumed_config = TrainConfig::load(&split.join("config.json")).unwrap();
    Overrides {
        max_steps: Some(6),
        ..Overrides::default()
    }
    .apply_run_control(&mut resumed_config);
    let second = train(&resumed_config, &options(&split, true)).unwrap();
    assert_eq!(second.steps, 6);

    let mut joined = first.losses.clone();
    joined.extend(&second.losses);
    assert_eq!(joined, full.losses, "per-step losses must be bit-identical");
    let a = checkpoint::read_tensors(&full.checkpoint.join(checkpoint::MODEL_FILE), &Device::Cpu)
        .unwrap();
    let b = checkpoint::read_tensors(
        &second.checkpoint.join(checkpoint::MODEL_FILE),
        &Device::Cpu,
    )
    .unwrap();
    for (name, t) in &a {
        let diff = (t - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
    // The run directory has everything the issue lists.
    for file in [
        "config.json",
        "metrics.jsonl",
        "loss.png",
        "samples/final.png",
        "checkpoints/latest",
    ] {
        assert!(split.join(file).is_file(), "{file} missing");
    }
    for file in [
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "state.json",
    ] {
        assert!(second.checkpoint.join(file).is_file(), "{file} missing");
    }
    let final_png = image::open(split.join("samples/final.png")).unwrap();
    assert_eq!((final_png.width(), final_png.height()), (252, 252));
}

#[test]
fn a_checkpoint_killed_mid_write_leaves_latest_valid() {
    let out = temp_run("killed");
    let summary = train(&config(&tiny(3)), &options(&out, false)).unwrap();
    let root = out.join("checkpoints");
    // What a kill during the next save leaves behind: a half-written temporary directory and
    // a temporary pointer file.
    let partial = root.join(".tmp-step_6");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), b"truncated").unwrap();
    std::fs::write(root.join(".latest.tmp"), "step_6\n").unwrap();
    assert_eq!(checkpoint::latest(&out).unwrap(), summary.checkpoint);
    assert_eq!(checkpoint::resolve(&out).unwrap(), summary.checkpoint);
    // Resuming works from the intact checkpoint and replaces the debris.
    let mut cfg = TrainConfig::load(&out.join("config.json")).unwrap();
    cfg.optim.max_steps = Some(6);
    let resumed = train(&cfg, &options(&out, true)).unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(checkpoint::latest(&out).unwrap(), root.join("step_6"));
    assert!(!partial.exists());
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let out = temp_run("nan");
    let overrides = Overrides {
        lr: Some(1e30),
        grad_clip: Some(0.0),
        warmup_steps: Some(0),
        save_every: Some(Every::Steps(1)),
        ..tiny(20)
    };
    let err = train(&config(&overrides), &options(&out, false)).unwrap_err();
    let TrainError::NonFiniteLoss { step, .. } = err else {
        panic!("expected a non-finite loss error, got {err}");
    };
    assert!(step >= 2, "step {step}");
    assert!(err_message(step).contains(&format!("step {step}")));
    let latest = checkpoint::latest(&out).unwrap();
    assert_eq!(
        latest,
        out.join("checkpoints").join(format!("step_{}", step - 1))
    );
    assert!(!out.join("samples/final.png").exists());
}

fn err_message(step: u64) -> String {
    TrainError::NonFiniteLoss {
        step,
        loss: f32::NAN,
    }
    .to_string()
}

#[test]
fn a_run_directory_is_never_overwritten_and_resume_checks_the_configuration() {
    let out = temp_run("guard");
    train(&config(&tiny(1)), &options(&out, false)).unwrap();
    let again = train(&config(&tiny(1)), &options(&out, false))
        .unwrap_err()
        .to_string();
    assert!(again.contains("already holds a run"), "{again}");
    let other = config(&Overrides {
        lr: Some(5e-4),
        ..tiny(2)
    });
    let mismatch = train(&other, &options(&out, true)).unwrap_err().to_string();
    assert!(mismatch.contains("another configuration"), "{mismatch}");
}

#[test]
fn presets_resolve_to_the_reference_numbers() {
    let resolve = |name: &str| {
        TrainConfig::resolve(name, DatasetSpec::Embedded, &Overrides::default()).unwrap()
    };
    let reference = |c: &TrainConfig| match &c.model {
        ModelConfig::Reference(r) => r.clone(),
        other => panic!("not the reference UNet: {other:?}"),
    };
    let faithful = |c: &TrainConfig| {
        assert_eq!(
            (
                c.optim.ema,
                c.optim.warmup_steps,
                c.optim.grad_clip,
                c.optim.weight_decay
            ),
            (0.0, 0, None, 0.0)
        );
        assert_eq!(c.optim.lr_schedule, LrSchedule::Constant);
        assert_eq!((c.schedule, c.optim.hflip), (BetaKind::Linear, false));
    };

    let c = resolve("ref-mnist");
    let r = reference(&c);
    assert_eq!(
        (r.channels, r.pe_dim, r.n_steps, r.norm),
        (vec![32, 64, 128, 256], 20, 1000, RefNorm::LayerNorm)
    );
    assert_eq!(
        (c.optim.batch_size, c.optim.lr, c.optim.epochs, c.save_every),
        (1024, 1e-3, 1000, Some(Every::Epochs(50)))
    );
    faithful(&c);

    let c = resolve("ref-mnist-res");
    let ModelConfig::Residual(r) = &c.model else {
        panic!("not the residual UNet")
    };
    assert_eq!(
        (r.channels.clone(), r.pe_dim, r.n_steps),
        (vec![10, 20, 40, 80], 128, 1000)
    );
    assert_eq!(
        (c.optim.batch_size, c.optim.lr, c.optim.epochs),
        (512, 1e-3, 100)
    );
    faithful(&c);

    let anime = DatasetSpec::Anime {
        dir: "data/anime-faces".into(),
        size: 64,
    };
    let c = TrainConfig::resolve("ref-anime", anime.clone(), &Overrides::default()).unwrap();
    let r = reference(&c);
    assert_eq!(
        (r.channels, r.pe_dim, r.n_steps, r.image.dims()),
        (vec![32, 64, 128, 256], 20, 1000, [3, 64, 64])
    );
    assert_eq!(
        (c.optim.batch_size, c.optim.lr, c.optim.epochs),
        (512, 3e-4, 3000)
    );
    assert_eq!(
        (c.save_every, c.sample_every),
        (Some(Every::Epochs(100)), Some(Every::Epochs(100)))
    );
    faithful(&c);

    let c = TrainConfig::resolve("ref-anime-small", anime.clone(), &Overrides::default()).unwrap();
    let r = reference(&c);
    assert_eq!(
        (r.channels, r.pe_dim, r.n_steps, r.norm),
        (vec![16, 32, 64, 128], 32, 800, RefNorm::BatchNorm)
    );
    assert_eq!(
        (c.optim.batch_size, c.optim.lr, c.optim.epochs, c.n_steps),
        (512, 2e-3, 1500, 800)
    );
    faithful(&c);

    let c = TrainConfig::resolve("anime", anime, &Overrides::default()).unwrap();
    assert!(matches!(c.model, ModelConfig::Modern(_)));
    assert!(
        c.optim.ema > 0.0
            && c.optim.warmup_steps > 0
            && c.optim.grad_clip.is_some()
            && c.optim.hflip
    );
    assert_eq!(c.optim.lr_schedule, LrSchedule::Cosine);

    // The README's main job: a 16-wide modern UNet with 4 GroupNorm groups (not instance norm),
    // T = 100 on the scaled linear schedule, 40 epochs of the embedded digits.
    let c = resolve("quick");
    let ModelConfig::Modern(m) = &c.model else {
        panic!("quick is not the modern UNet: {:?}", c.model)
    };
    assert_eq!(
        (m.base_channels, m.channel_mult.clone(), m.norm_groups),
        (16, vec![1, 2, 2], 4)
    );
    assert_eq!((c.n_steps, c.schedule), (100, BetaKind::LinearScaled));
    assert_eq!(
        (
            c.optim.batch_size,
            c.optim.epochs,
            c.optim.ema,
            c.optim.grad_clip
        ),
        (64, 40, 0.99, Some(1.0))
    );

    // Explicit options override the preset.
    let c = TrainConfig::resolve(
        "ref-mnist",
        DatasetSpec::Embedded,
        &Overrides {
            model: Some(ModelKind::Res),
            lr: Some(2e-4),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert!(matches!(c.model, ModelConfig::Residual(_)));
    assert_eq!(c.optim.lr, 2e-4);
    assert!(TrainConfig::resolve("nope", DatasetSpec::Embedded, &Overrides::default()).is_err());
}

#[test]
fn a_missing_dataset_names_the_command_that_fetches_it() {
    let out = temp_run("shape");
    let missing = DatasetSpec::Mnist {
        dir: out.join("no-such-dir"),
    };
    let cfg = TrainConfig::resolve("ref-mnist", missing, &tiny(1)).unwrap();
    let err = train(&cfg, &options(&out, false)).unwrap_err().to_string();
    assert!(err.contains("cargo xtask fetch-mnist"), "{err}");
}

/// One optimizer step on a batch of B images in one process, and on two halves in two ranks
/// (threads talking over 127.0.0.1), starting from the same weights with the same t and ε per
/// image: the gradient average must make the weights agree.
#[test]
fn two_ranks_with_half_batches_step_like_one_rank_with_the_whole_batch() {
    let cfg = config(&Overrides {
        grad_clip: Some(1.0),
        ..tiny(1)
    });
    let schedule = Schedule::new(BetaKind::Linear, 50, &Device::Cpu).unwrap();
    let images = embedded_mnist();
    let indices: Vec<usize> = (0..16).collect();
    let x0 = batch_tensor(&images, &indices, &[false; 16], &Device::Cpu).unwrap();
    let (t, eps) = ddpm_train::draw_t_eps(&mut NoiseRng::new(5), &x0, 50).unwrap();

    let step = |x0: &Tensor,
                t: &Tensor,
                eps: &Tensor,
                collective: Option<&mut dyn ddpm_dist::Collective>| {
        let model = Model::new(&cfg.model, &Device::Cpu, 0).unwrap();
        let params = model.trainable();
        let mut adam = Adam::new(params.clone(), 0.0).unwrap();
        let loss = ddpm_train::diffusion_loss_given(&model, &schedule, x0, t, eps).unwrap();
        optimizer_step(
            &params,
            loss.backward().unwrap(),
            collective,
            Some(1.0),
            &mut adam,
            1e-3,
        )
        .unwrap();
        model.state_dict().unwrap()
    };
    let whole = step(&x0, &t, &eps, None);

    let port = ddpm_dist::free_port().unwrap();
    let halves: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let (x0, t, eps) = (
                    x0.narrow(0, rank * 8, 8).unwrap(),
                    t.narrow(0, rank * 8, 8).unwrap(),
                    eps.narrow(0, rank * 8, 8).unwrap(),
                );
                let step = &step;
                scope.spawn(move || {
                    let world = WorldInfo {
                        rank,
                        world_size: 2,
                        local_rank: rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                    };
                    let mut collective =
                        ddpm_dist::connect(&world, ddpm_dist::Backend::Tcp).unwrap();
                    step(&x0, &t, &eps, Some(collective.as_mut()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, want) in &whole {
        for (rank, got) in halves.iter().enumerate() {
            let diff = ddpm_tests::max_abs_diff(want, &got[name]);
            assert!(diff <= 1e-5, "rank {rank}, {name}: {diff:e}");
        }
        assert_eq!(
            ddpm_tests::max_abs_diff(&halves[0][name], &halves[1][name]),
            0.0,
            "{name}: ranks differ"
        );
    }
}
