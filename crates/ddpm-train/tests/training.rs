//! The trainer on tiny models: learning, exact resume, crash-safe checkpoints, the NaN guard
//! and the presets.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::{Device, Tensor};
use ddpm_data::DatasetSpec;
use ddpm_data::{batch_tensor, embedded_mnist};
use ddpm_diffusion::{BetaKind, NoiseRng, Prediction, Schedule};
use ddpm_run::checkpoint;
use ddpm_train::{
    Adam, ChannelList, ControlOverrides, Every, GradClip, LossWeight, LrSchedule, Objective,
    Overrides, RecipeOverrides, RunOptions, TrainConfig, TrainError, WorldInfo, diffusion_loss,
    optimizer_step, train,
};
use ddpm_unet::{Model, ModelConfig, ModelKind, RefNorm};

fn temp_run(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny reference UNet on the embedded digits, with EMA, warmup and cosine LR on so that
/// every piece of state takes part.
fn tiny(max_steps: u64) -> Overrides {
    Overrides {
        recipe: tiny_recipe(),
        control: ControlOverrides {
            max_steps: Some(max_steps),
            log_every: Some(2),
            save_every: Some(Every::Steps(3)),
            ..ControlOverrides::default()
        },
    }
}

fn tiny_recipe() -> RecipeOverrides {
    RecipeOverrides {
        channels: Some(ChannelList(vec![4, 8])),
        pe_dim: Some(8),
        n_steps: Some(50),
        batch_size: Some(16),
        epochs: Some(1),
        ema: Some(0.9),
        warmup_steps: Some(2),
        lr_schedule: Some(LrSchedule::Cosine),
        grad_clip: Some(GradClip(1.0)),
        ..RecipeOverrides::default()
    }
}

/// `base` with the recipe changed by `change`.
fn with_recipe(base: Overrides, change: impl FnOnce(&mut RecipeOverrides)) -> Overrides {
    let mut overrides = base;
    change(&mut overrides.recipe);
    overrides
}

/// The control part of overrides that only stop the run at `max_steps`.
fn stop_at(max_steps: u64) -> Overrides {
    Overrides {
        control: ControlOverrides {
            max_steps: Some(max_steps),
            ..ControlOverrides::default()
        },
        ..Overrides::default()
    }
}

fn options(out: &Path, resume: bool) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        resume,
        resume_from: None,
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
    let model = Model::new(&cfg.spec.network, &Device::Cpu, 0).unwrap();
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
    let saved = TrainConfig::load(&split.join("config.json")).unwrap();
    let resumed_config = TrainConfig::resume(saved, &stop_at(6)).unwrap();
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
        "manifest.json",
        "config.json",
    ] {
        assert!(second.checkpoint.join(file).is_file(), "{file} missing");
    }
    let final_png = image::open(split.join("samples/final.png")).unwrap();
    assert_eq!((final_png.width(), final_png.height()), (252, 252));
}

/// v-prediction with Min-SNR weighting, offset noise and zero terminal SNR: the extra noise
/// draws resume exactly, the losses differ from the plain recipe's, and the manifest records
/// the rescaled schedule for the sampler.
#[test]
fn a_run_with_every_objective_option_resumes_exactly() {
    let objective = |max_steps| {
        with_recipe(tiny(max_steps), |r| {
            r.prediction = Some(Prediction::V);
            r.loss_weight = Some(LossWeight::MinSnr);
            r.offset_noise = Some(0.1);
            r.zero_terminal_snr = Some(true);
        })
    };
    let straight = temp_run("objective-straight");
    let full = train(&config(&objective(4)), &options(&straight, false)).unwrap();
    assert!(
        full.losses.iter().all(|l| l.is_finite()),
        "{:?}",
        full.losses
    );
    let plain = train(&config(&tiny(4)), &options(&temp_run("plain"), false)).unwrap();
    assert_ne!(full.losses, plain.losses);

    let split = temp_run("objective-split");
    let first = train(&config(&objective(2)), &options(&split, false)).unwrap();
    let saved = TrainConfig::load(&split.join("config.json")).unwrap();
    let resumed = TrainConfig::resume(saved, &stop_at(4)).unwrap();
    let second = train(&resumed, &options(&split, true)).unwrap();
    let mut joined = first.losses.clone();
    joined.extend(&second.losses);
    assert_eq!(joined, full.losses, "per-step losses must be bit-identical");

    let manifest = checkpoint::read_manifest(&second.checkpoint).unwrap();
    assert!(manifest.zero_terminal_snr);
    assert_eq!(manifest.prediction, Prediction::V);
    let schedule = manifest.schedule(&Device::Cpu).unwrap();
    assert_eq!(schedule.alpha_bars()[49], 0.0);
    assert!(split.join("samples/final.png").is_file());
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
    let saved = TrainConfig::load(&out.join("config.json")).unwrap();
    let cfg = TrainConfig::resume(saved, &stop_at(6)).unwrap();
    let resumed = train(&cfg, &options(&out, true)).unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(checkpoint::latest(&out).unwrap(), root.join("step_6"));
    assert!(!partial.exists());
}

#[test]
fn a_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let out = temp_run("nan");
    let mut overrides = with_recipe(tiny(20), |r| {
        r.lr = Some(1e30);
        r.grad_clip = Some(GradClip(0.0));
        r.warmup_steps = Some(0);
    });
    overrides.control.save_every = Some(Every::Steps(1));
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
    let other = config(&with_recipe(tiny(2), |r| r.lr = Some(5e-4)));
    let mismatch = train(&other, &options(&out, true)).unwrap_err().to_string();
    assert!(mismatch.contains("another configuration"), "{mismatch}");
    // The refused resume left the run's configuration as it was.
    let kept = TrainConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(kept, config(&tiny(1)));
}

#[test]
fn presets_resolve_to_the_reference_numbers() {
    let resolve = |name: &str| {
        TrainConfig::resolve(name, DatasetSpec::Embedded, &Overrides::default()).unwrap()
    };
    let reference = |c: &TrainConfig| match &c.spec.network {
        ModelConfig::Reference(r) => r.clone(),
        other => panic!("not the reference UNet: {other:?}"),
    };
    let faithful = |c: &TrainConfig| {
        let r = &c.spec.recipe;
        assert_eq!(
            (r.ema, r.warmup_steps, r.grad_clip, r.weight_decay),
            (0.0, 0, None, 0.0)
        );
        assert_eq!(r.lr_schedule, LrSchedule::Constant);
        assert_eq!((r.schedule, r.hflip), (BetaKind::Linear, false));
    };

    let c = resolve("ref-mnist");
    let r = reference(&c);
    assert_eq!(
        (r.channels, r.pe_dim, r.n_steps, r.norm),
        (vec![32, 64, 128, 256], 20, 1000, RefNorm::LayerNorm)
    );
    assert_eq!(
        (
            c.spec.recipe.batch_size,
            c.spec.recipe.lr,
            c.spec.recipe.epochs,
            c.control.save_every
        ),
        (1024, 1e-3, 1000, Some(Every::Epochs(50)))
    );
    faithful(&c);

    let c = resolve("ref-mnist-res");
    let ModelConfig::Residual(r) = &c.spec.network else {
        panic!("not the residual UNet")
    };
    assert_eq!(
        (r.channels.clone(), r.pe_dim, r.n_steps),
        (vec![10, 20, 40, 80], 128, 1000)
    );
    assert_eq!(
        (
            c.spec.recipe.batch_size,
            c.spec.recipe.lr,
            c.spec.recipe.epochs
        ),
        (512, 1e-3, 100)
    );
    faithful(&c);

    let anime = DatasetSpec::Anime { size: 64 };
    let c = TrainConfig::resolve("ref-anime", anime.clone(), &Overrides::default()).unwrap();
    let r = reference(&c);
    assert_eq!(
        (r.channels, r.pe_dim, r.n_steps, r.image.dims()),
        (vec![32, 64, 128, 256], 20, 1000, [3, 64, 64])
    );
    assert_eq!(
        (
            c.spec.recipe.batch_size,
            c.spec.recipe.lr,
            c.spec.recipe.epochs
        ),
        (512, 3e-4, 3000)
    );
    assert_eq!(
        (c.control.save_every, c.control.sample_every),
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
        (
            c.spec.recipe.batch_size,
            c.spec.recipe.lr,
            c.spec.recipe.epochs,
            c.spec.recipe.n_steps
        ),
        (512, 2e-3, 1500, 800)
    );
    faithful(&c);

    let c = TrainConfig::resolve("anime", anime, &Overrides::default()).unwrap();
    assert!(matches!(c.spec.network, ModelConfig::Modern(_)));
    let r = &c.spec.recipe;
    assert!(r.ema > 0.0 && r.warmup_steps > 0 && r.grad_clip.is_some() && r.hflip);
    assert_eq!(r.lr_schedule, LrSchedule::Cosine);

    // The README's main job: a 16-wide modern UNet with 4 GroupNorm groups (not instance norm),
    // T = 100 on the scaled linear schedule, 22 epochs of the embedded digits, conditioned on
    // the digit with label dropout, min-SNR weighted; its grid a row per digit, guided.
    let c = resolve("quick");
    let ModelConfig::Modern(m) = &c.spec.network else {
        panic!("quick is not the modern UNet: {:?}", c.spec.network)
    };
    assert_eq!(
        (m.base_channels, m.channel_mult.clone(), m.norm_groups),
        (16, vec![1, 2, 2], 4)
    );
    let r = &c.spec.recipe;
    assert_eq!((r.n_steps, r.schedule), (100, BetaKind::LinearScaled));
    assert_eq!(
        (r.batch_size, r.epochs, r.ema, r.grad_clip),
        (64, 22, 0.99, Some(1.0))
    );
    assert_eq!((r.conditional, r.cond_drop), (true, 0.1));
    assert_eq!(r.loss_weight, ddpm_train::LossWeight::MinSnr);
    assert_eq!(m.num_classes, 10);
    assert_eq!((c.spec.sample.n, c.spec.sample.nrow), (90, 9));
    assert!(c.spec.sample.guidance > 1.0);

    // Explicit options override the preset.
    let c = TrainConfig::resolve(
        "ref-mnist",
        DatasetSpec::Embedded,
        &with_recipe(Overrides::default(), |r| {
            r.model = Some(ModelKind::Res);
            r.lr = Some(2e-4);
        }),
    )
    .unwrap();
    assert!(matches!(c.spec.network, ModelConfig::Residual(_)));
    assert_eq!(c.spec.recipe.lr, 2e-4);
    assert!(TrainConfig::resolve("nope", DatasetSpec::Embedded, &Overrides::default()).is_err());
}

#[test]
fn a_missing_dataset_names_the_command_that_fetches_it() {
    let out = temp_run("shape");
    let mut overrides = tiny(1);
    overrides.control.data_dir = Some(out.join("no-such-dir"));
    let cfg = TrainConfig::resolve("ref-mnist", DatasetSpec::Mnist, &overrides).unwrap();
    let err = train(&cfg, &options(&out, false)).unwrap_err().to_string();
    assert!(err.contains("cargo xtask fetch-mnist"), "{err}");
}

/// One optimizer step on a batch of B images in one process, and on two halves in two ranks
/// (threads talking over 127.0.0.1), starting from the same weights with the same t and ε per
/// image: the gradient average must make the weights agree.
#[test]
fn two_ranks_with_half_batches_step_like_one_rank_with_the_whole_batch() {
    let cfg = config(&tiny(1));
    let schedule = Schedule::new(BetaKind::Linear, 50, &Device::Cpu).unwrap();
    let images = embedded_mnist();
    let indices: Vec<usize> = (0..16).collect();
    let x0 = batch_tensor(&images, &indices, &[false; 16], &Device::Cpu).unwrap();
    let (t, eps) = ddpm_train::draw_t_eps(&mut NoiseRng::new(5), &x0, 50, 0.0).unwrap();

    let step = |x0: &Tensor,
                t: &Tensor,
                eps: &Tensor,
                collective: Option<&mut dyn ddpm_dist::Collective>| {
        let model = Model::new(&cfg.spec.network, &Device::Cpu, 0).unwrap();
        let params = model.trainable();
        let mut adam = Adam::new(params.clone(), 0.0).unwrap();
        let objective = Objective::unweighted(Prediction::Epsilon);
        let loss =
            ddpm_train::diffusion_loss_given(&model, &schedule, &objective, x0, t, eps, None)
                .unwrap();
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

/// Writes the first `n` embedded digits as PNGs into `dir`: an image-folder dataset.
fn digit_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let digits = embedded_mnist();
    for i in 0..n {
        let img = image::GrayImage::from_raw(28, 28, digits.image(i).to_vec()).unwrap();
        img.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
}

/// Overrides for a tiny run of 4 epochs on the folder `data`, stopping at `max_steps`.
fn on_folder(data: &Path, max_steps: u64) -> Overrides {
    let mut overrides = with_recipe(tiny(max_steps), |r| r.epochs = Some(4));
    overrides.control.data_dir = Some(data.to_path_buf());
    overrides
}

/// Regression (bug 1): the data's location is run control, not part of what was trained, so
/// a run whose data moved resumes from the new folder, and exactly.
#[test]
fn a_run_whose_data_moved_resumes_from_the_new_folder_exactly() {
    let root = temp_run("moved");
    let (a, b) = (root.join("data-a"), root.join("data-b"));
    digit_folder(&a, 48);
    let folder = DatasetSpec::Folder {
        size: 28,
        channels: 1,
    };
    let resolve = |o: &Overrides| TrainConfig::resolve("ref-mnist", folder.clone(), o).unwrap();
    let straight = train(
        &resolve(&on_folder(&a, 6)),
        &options(&root.join("straight"), false),
    )
    .unwrap();
    assert_eq!(straight.steps, 6);

    let split = root.join("split");
    let first = train(&resolve(&on_folder(&a, 3)), &options(&split, false)).unwrap();
    std::fs::rename(&a, &b).unwrap();
    let saved = TrainConfig::load(&split.join("config.json")).unwrap();
    // Without the new folder, the error names the old one and the option to give.
    let stale = TrainConfig::resume(saved.clone(), &stop_at(6)).unwrap();
    let err = train(&stale, &options(&split, true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data-a") && err.contains("--data-dir"),
        "{err}"
    );

    let mut moved = stop_at(6);
    moved.control.data_dir = Some(b.clone());
    let config = TrainConfig::resume(saved.clone(), &moved).unwrap();
    let second = train(&config, &options(&split, true)).unwrap();
    let mut joined = first.losses.clone();
    joined.extend(&second.losses);
    assert_eq!(
        joined, straight.losses,
        "per-step losses must be bit-identical"
    );

    // Other data (another number of images) is refused rather than silently trained on.
    let c = root.join("data-c");
    digit_folder(&c, 40);
    let mut other = stop_at(9);
    other.control.data_dir = Some(c);
    let config = TrainConfig::resume(saved, &other).unwrap();
    let err = train(&config, &options(&split, true))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trained on 48 images") && err.contains("holds 40"),
        "{err}"
    );
}

/// Regression (bug 2): `--epochs` is the LR schedule's horizon, so it cannot change on
/// resume; nor can anything else that is trained. Run control can.
#[test]
fn resume_refuses_epochs_and_training_changes_but_takes_run_control() {
    let out = temp_run("resume-options");
    train(&config(&tiny(2)), &options(&out, false)).unwrap();
    let saved = TrainConfig::load(&out.join("config.json")).unwrap();
    let refused = |change: fn(&mut RecipeOverrides)| {
        TrainConfig::resume(saved.clone(), &with_recipe(stop_at(3), change))
            .unwrap_err()
            .to_string()
    };
    let epochs = refused(|r| r.epochs = Some(5));
    assert!(
        epochs.contains("--epochs")
            && epochs.contains("horizon of the LR schedule")
            && epochs.contains("--max-steps"),
        "{epochs}"
    );
    let lr = refused(|r| {
        r.lr = Some(1e-4);
        r.seed = Some(3);
    });
    assert!(lr.contains("--lr, --seed"), "{lr}");
    let mut control = stop_at(3);
    control.control.keep_last = Some(1);
    let resumed = TrainConfig::resume(saved.clone(), &control).unwrap();
    assert_eq!(resumed.spec, saved.spec);
    assert_eq!(
        (resumed.control.max_steps, resumed.control.keep_last),
        (Some(3), Some(1))
    );
    assert_eq!(train(&resumed, &options(&out, true)).unwrap().steps, 3);
}

/// `--config FILE` repeats a run: the saved file reads back to the same configuration, and
/// options given beside it change it.
#[test]
fn a_saved_config_repeats_the_run_and_older_files_are_named() {
    let dir = temp_run("repeat");
    std::fs::create_dir_all(&dir).unwrap();
    let original = config(&tiny(2));
    let path = dir.join("config.json");
    original.save(&path).unwrap();
    let loaded = TrainConfig::load(&path).unwrap();
    assert_eq!(loaded, original);
    let again = TrainConfig::repeat(&loaded, &Overrides::default()).unwrap();
    assert_eq!(again, original);
    assert_eq!(again.spec.digest(), original.spec.digest());
    let changed =
        TrainConfig::repeat(&loaded, &with_recipe(stop_at(5), |r| r.lr = Some(1e-4))).unwrap();
    assert_eq!(
        (changed.spec.recipe.lr, changed.control.max_steps),
        (1e-4, Some(5))
    );
    assert_ne!(changed.spec.digest(), original.spec.digest());

    let legacy = dir.join("legacy.json");
    std::fs::write(
        &legacy,
        r#"{"preset": "quick", "model": {"kind": "modern"}}"#,
    )
    .unwrap();
    let err = TrainConfig::load(&legacy).unwrap_err().to_string();
    assert!(err.contains("earlier version"), "{err}");
}
