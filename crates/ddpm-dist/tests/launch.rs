//! The launcher with real processes: the `ddpm-dist-check` binary as ranks over TCP.

use ddpm_dist::{LaunchError, launch};
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

fn check_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ddpm-dist-check"))
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

/// Timeouts the children read from the environment: short, so a failure shows within seconds.
fn env() -> Vec<(String, String)> {
    vec![
        ("DDPM_DIST_CONNECT_TIMEOUT_S".into(), "20".into()),
        ("DDPM_DIST_PEER_TIMEOUT_S".into(), "2".into()),
    ]
}

#[test]
fn three_processes_reduce_and_exit_cleanly() {
    launch(
        3,
        check_bin(),
        &args(&["--elems", "5000", "--steps", "3"]),
        &env(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_failing_rank_is_reported_with_its_status_and_stderr_and_the_rest_stop() {
    let start = Instant::now();
    let err = launch(
        3,
        check_bin(),
        &args(&[
            "--elems",
            "100",
            "--steps",
            "50",
            "--fail-rank",
            "1",
            "--fail-step",
            "2",
        ]),
        &env(),
    )
    .unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let LaunchError::RankFailed(report) = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(report.rank, 1, "{err}");
    assert_eq!(report.status.code(), Some(7), "{err}");
    assert!(
        report
            .stderr_tail
            .iter()
            .any(|l| l.contains("injected failure at step 2")),
        "{err}"
    );
    // The survivors noticed on their own (peer lost) rather than hanging until killed.
    assert_eq!(report.others.len(), 2);
    for (rank, status, killed) in &report.others {
        assert!(
            !killed && !status.success(),
            "rank {rank}: {status}, killed {killed}"
        );
    }
    let text = err.to_string();
    assert!(text.contains("rank 1 of 3 failed first"), "{text}");
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let err = launch(2, Path::new("/nonexistent/ddpm-dist-nothing"), &[], &[]).unwrap_err();
    assert!(matches!(err, LaunchError::Spawn { rank: 0, .. }), "{err}");
}

#[test]
fn a_rank_that_hangs_after_another_failed_is_killed_after_the_grace_period() {
    let script =
        r#"if [ "$RANK" = 1 ]; then echo "rank one gives up" >&2; exit 3; else exec sleep 60; fi"#;
    let start = Instant::now();
    let err = launch(2, Path::new("sh"), &args(&["-c", script]), &[]).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= ddpm_dist::GRACE && elapsed < ddpm_dist::GRACE + Duration::from_secs(3),
        "took {elapsed:?}"
    );
    let LaunchError::RankFailed(report) = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!((report.rank, report.status.code()), (1, Some(3)), "{err}");
    assert_eq!(report.stderr_tail, ["rank one gives up"]);
    assert!(matches!(report.others[..], [(0, _, true)]), "{err}");
    assert!(
        err.to_string().contains("rank 0 killed by the launcher"),
        "{err}"
    );
}

/// `--procs 1` launches one rank, which must see the launcher's environment and not launch again.
#[test]
fn the_check_tool_runs_a_world_of_one_without_relaunching() {
    let mut child = std::process::Command::new(check_bin())
        .args(["--procs", "1", "--elems", "100", "--steps", "1"])
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ddpm-dist-check --procs 1 did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        out.contains("ok: 1 ranks") && out.contains("all 1 ranks passed"),
        "{out}"
    );
}
