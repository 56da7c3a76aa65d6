//! The trainer binary under signals: Ctrl-C (SIGINT) and SIGTERM stop a run after a
//! checkpoint with the exit statuses shells expect (130, 143), and resume refuses `--epochs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ddpm-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A tiny run that would take far longer than the test: it is stopped by a signal.
fn start(out: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(ddpm_tests::chaos::TINY_NETWORK_ARGS)
        .args([
            "--log-every",
            "1",
            "--save-every",
            "100000s",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits until the run has logged its first step, sends `signal`, and returns the exit status
/// and everything the trainer printed.
fn stop_with(signal: libc::c_int, out: &Path) -> (i32, String) {
    let (mut child, lines) = start(out);
    let mut log = String::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no training step logged; stderr so far:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if line.starts_with("step ") {
            break;
        }
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) only sends a signal, to the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let code = child.wait().unwrap().code().expect("exited, not killed");
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        log.push_str(&line);
        log.push('\n');
    }
    (code, log)
}

#[test]
fn ctrl_c_saves_and_exits_130() {
    let out = temp("sigint");
    let (code, log) = stop_with(libc::SIGINT, &out);
    assert_eq!(code, 130, "{log}");
    assert!(log.contains("stopped after"), "{log}");
    assert!(out.join("checkpoints/latest").is_file(), "{log}");
    assert!(out.join("samples/final.png").is_file(), "{log}");

    // Resuming with another --epochs would bend the LR curve part-way: refused as bad input
    // (status 2).
    let resume = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["--epochs", "5", "--resume"])
        .arg(&out)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resume.stderr);
    assert_eq!(resume.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("horizon of the LR schedule"), "{stderr}");
    // A user error is its message, not a backtrace.
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn sigterm_saves_and_exits_143() {
    let out = temp("sigterm");
    let (code, log) = stop_with(libc::SIGTERM, &out);
    assert_eq!(code, 143, "{log}");
    assert!(out.join("checkpoints/latest").is_file(), "{log}");
}
