//! Chaos resume: a tiny run killed with SIGKILL at seeded random moments and resumed after
//! each kill ends bit-identical to the same run left alone (weights, EMA, moments, counters
//! and every step's loss). `cargo xtask chaos` runs a longer one (docs/reliability.md).

use ddpm_tests::chaos::{self, ChaosPlan};

#[test]
fn a_run_killed_and_resumed_five_times_matches_the_uninterrupted_run_bit_for_bit() {
    let plan = ChaosPlan {
        trainer: env!("CARGO_BIN_EXE_trainer").into(),
        args: chaos::tiny_run_args(60, 4),
        kills: 5,
        seed: 17,
        dir: std::env::temp_dir().join(format!("ddpm-chaos-{}", std::process::id())),
    };
    let report = chaos::run(&plan).unwrap();
    assert_eq!(report.steps, 60, "{report:?}");
    assert!(report.differences.is_empty(), "{report:?}");
    assert_eq!(report.kills, 5, "{report:?}");
    let _ = std::fs::remove_dir_all(&plan.dir);
}
