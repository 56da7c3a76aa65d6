//! Class-conditional training: labels reach the network (with label dropout), the run records
//! its classes, its grid has a row per class, it resumes exactly, and unlabelled data is
//! refused with a clear message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use ddpm_data::{DatasetSpec, embedded_mnist_with_labels};
use ddpm_run::checkpoint;
use ddpm_train::{
    ChannelList, ControlOverrides, Every, Overrides, RecipeOverrides, RunOptions, TrainConfig,
    WorldInfo, train,
};
use ddpm_unet::ModelKind;

fn temp_run(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-cond-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
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

/// A tiny conditional residual UNet on the embedded digits, a quarter of the labels dropped
/// (the residual UNet is the cheapest network with a class embedding; the modern one's is
/// tested in ddpm-unet).
fn tiny_conditional(max_steps: u64) -> Overrides {
    Overrides {
        recipe: RecipeOverrides {
            model: Some(ModelKind::Res),
            channels: Some(ChannelList(vec![4, 8])),
            pe_dim: Some(8),
            n_steps: Some(10),
            batch_size: Some(8),
            epochs: Some(1),
            conditional: Some(true),
            cond_drop: Some(0.25),
            ..RecipeOverrides::default()
        },
        control: ControlOverrides {
            max_steps: Some(max_steps),
            log_every: Some(2),
            save_every: Some(Every::Steps(2)),
            ..ControlOverrides::default()
        },
    }
}

fn resolve(overrides: &Overrides) -> ddpm_train::Result<TrainConfig> {
    TrainConfig::resolve("ref-mnist", DatasetSpec::Embedded, overrides)
}

#[test]
fn a_conditional_run_records_its_classes_grids_a_row_per_class_and_resumes_exactly() {
    let config = resolve(&tiny_conditional(4)).unwrap();
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    assert_eq!(config.spec.classes.as_ref(), Some(&digits));
    assert_eq!(config.spec.network.num_classes(), 10);
    let nrow = config.spec.sample.nrow;
    assert_eq!(config.spec.sample.n, 10 * nrow, "one grid row per class");

    let straight = temp_run("straight");
    let full = train(&config, &options(&straight, false)).unwrap();
    let split = temp_run("split");
    let first = train(
        &resolve(&tiny_conditional(2)).unwrap(),
        &options(&split, false),
    )
    .unwrap();
    let saved = TrainConfig::load(&split.join("config.json")).unwrap();
    let mut more = Overrides::default();
    more.control.max_steps = Some(4);
    let second = train(
        &TrainConfig::resume(saved, &more).unwrap(),
        &options(&split, true),
    )
    .unwrap();
    let mut joined = first.losses;
    joined.extend(&second.losses);
    assert_eq!(joined, full.losses, "label dropout resumes exactly");

    let manifest = checkpoint::read_manifest(&full.checkpoint).unwrap();
    assert_eq!(manifest.classes, Some(digits));
    let grid = image::open(&full.final_grid).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (28 * nrow as u32, 28 * 10),
        "ten rows of {nrow} digits"
    );
}

#[test]
fn label_dropout_and_labels_change_the_training() {
    let run = |name: &str, change: fn(&mut RecipeOverrides)| {
        let mut overrides = tiny_conditional(2);
        change(&mut overrides.recipe);
        train(
            &resolve(&overrides).unwrap(),
            &options(&temp_run(name), false),
        )
        .unwrap()
        .losses
    };
    let dropped = run("dropped", |_| {});
    let kept = run("kept", |r| r.cond_drop = Some(0.0));
    let unconditional = run("unconditional", |r| {
        r.conditional = Some(false);
        r.cond_drop = Some(0.0);
    });
    // Same images, t and ε in every arm (dropout draws come after them): only the labels
    // the network sees differ.
    assert_ne!(dropped, kept);
    assert_ne!(kept, unconditional);
    assert_eq!(kept.len(), 2);
}

#[test]
fn conditioning_needs_labelled_data_and_a_network_that_takes_labels() {
    let root = temp_run("unlabelled");
    let data = root.join("digits");
    std::fs::create_dir_all(&data).unwrap();
    let (images, labels) = embedded_mnist_with_labels();
    for i in 0..6 {
        let img = image::GrayImage::from_raw(28, 28, images.image(i).to_vec()).unwrap();
        img.save(data.join(format!("{i}.png"))).unwrap();
    }
    let folder = DatasetSpec::Folder {
        size: 28,
        channels: 1,
    };
    let mut overrides = tiny_conditional(1);
    overrides.control.data_dir = Some(data.clone());
    let err = TrainConfig::resolve("ref-mnist", folder.clone(), &overrides)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no classes") && err.contains("class subfolders"),
        "{err}"
    );
    // The conditional quick preset trains such a folder unconditionally unless told otherwise.
    let mut plain = Overrides::default();
    plain.control.data_dir = Some(data.clone());
    let config = TrainConfig::resolve("quick", folder.clone(), &plain).unwrap();
    assert!(!config.spec.recipe.conditional && config.spec.classes.is_none());
    assert_eq!(config.spec.network.num_classes(), 0);
    // The same pictures sorted into class subfolders train conditionally.
    for (i, label) in labels.iter().take(6).enumerate() {
        let class = data.join(format!("digit-{label}"));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::rename(
            data.join(format!("{i}.png")),
            class.join(format!("{i}.png")),
        )
        .unwrap();
    }
    let config = TrainConfig::resolve("ref-mnist", folder, &overrides).unwrap();
    let classes = config.spec.classes.clone().unwrap();
    assert!(
        classes.len() >= 2 && classes[0].starts_with("digit-"),
        "{classes:?}"
    );
    assert_eq!(config.spec.network.num_classes(), classes.len());
    // Label dropout without labels, and the reference UNet, are refused.
    let mut unconditional_drop = tiny_conditional(1);
    unconditional_drop.recipe.conditional = Some(false);
    let err = resolve(&unconditional_drop).unwrap_err().to_string();
    assert!(err.contains("--cond-drop"), "{err}");
    let mut reference = tiny_conditional(1);
    reference.recipe.model = Some(ModelKind::Ref);
    let err = resolve(&reference).unwrap_err().to_string();
    assert!(err.contains("no class conditioning"), "{err}");
}
