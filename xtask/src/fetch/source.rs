//! Where files come from: an HTTP(S) mirror, or a local folder (`file://` URL or plain path).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A mirror: a base URL or a folder; a file's location is the base joined with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `http://` or `https://` base URL.
    Http(String),
    /// A local folder.
    Dir(PathBuf),
}

impl Source {
    /// Parses `http(s)://...`, `file://PATH`, or a plain folder path.
    pub fn parse(s: &str) -> Source {
        if s.starts_with("http://") || s.starts_with("https://") {
            Source::Http(s.to_string())
        } else {
            Source::Dir(PathBuf::from(s.strip_prefix("file://").unwrap_or(s)))
        }
    }

    /// Where `name` is on this mirror, for messages.
    pub fn location(&self, name: &str) -> String {
        match self {
            Source::Http(base) => format!("{}/{name}", base.trim_end_matches('/')),
            Source::Dir(dir) => dir.join(name).display().to_string(),
        }
    }
}

/// Why a transfer failed: worth retrying on the same mirror, or not.
#[derive(Debug)]
pub enum TransferError {
    /// Connection refused or cut, timeouts: try again.
    Transient(String),
    /// The mirror answered but has no such file (HTTP 404, missing local file): next mirror.
    Missing(String),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Transient(m) | TransferError::Missing(m) => f.write_str(m),
        }
    }
}

/// Downloads files over HTTP(S) or copies them from folders, with a progress bar.
pub struct Transfer {
    agent: ureq::Agent,
}

impl Transfer {
    /// A client with connect and per-read timeouts.
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build();
        Self {
            agent: config.into(),
        }
    }

    /// Writes `name` from `source` to `dest` (created or truncated), checking the length
    /// when the server announces one.
    pub fn fetch(&self, source: &Source, name: &str, dest: &Path) -> Result<u64, TransferError> {
        let location = source.location(name);
        let io = |what: &str, e: std::io::Error| {
            TransferError::Transient(format!("{location}: {what}: {e}"))
        };
        let mut out =
            std::fs::File::create(dest).map_err(|e| io("cannot create the temporary file", e))?;
        let written = match source {
            Source::Http(_) => {
                let mut response = match self.agent.get(&location).call() {
                    Ok(r) => r,
                    Err(ureq::Error::StatusCode(404)) => {
                        return Err(TransferError::Missing(format!(
                            "{location}: HTTP 404 not found"
                        )));
                    }
                    Err(e) => return Err(TransferError::Transient(format!("{location}: {e}"))),
                };
                let expected = response.body().content_length();
                let reader = response.body_mut().as_reader();
                let n = copy_with_progress(reader, &mut out, expected, name)
                    .map_err(|(n, e)| cut(&location, n, expected, &e.to_string()))?;
                if let Some(len) = expected.filter(|&len| len != n) {
                    return Err(cut(&location, n, Some(len), "connection closed early"));
                }
                n
            }
            Source::Dir(_) => {
                let path = PathBuf::from(&location);
                let file = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(TransferError::Missing(format!("{location}: no such file")));
                    }
                    Err(e) => return Err(io("cannot open", e)),
                };
                let len = file.metadata().map(|m| m.len()).ok();
                copy_with_progress(file, &mut out, len, name)
                    .map_err(|(_, e)| io("copy failed", e))?
            }
        };
        out.sync_all()
            .map_err(|e| io("cannot flush the temporary file", e))?;
        Ok(written)
    }
}

fn cut(location: &str, got: u64, expected: Option<u64>, why: &str) -> TransferError {
    let of = expected.map(|l| format!(" of {l}")).unwrap_or_default();
    TransferError::Transient(format!(
        "{location}: transfer cut after {got}{of} bytes ({why})"
    ))
}

/// Copies `reader` into `out` showing a progress bar (hidden when stderr is not a terminal).
/// On error, returns the bytes copied so far with the error.
fn copy_with_progress(
    mut reader: impl Read,
    out: &mut impl Write,
    len: Option<u64>,
    name: &str,
) -> Result<u64, (u64, std::io::Error)> {
    let bar = match len {
        Some(l) => ProgressBar::new(l).with_style(
            ProgressStyle::with_template(
                "{msg:32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    }
    .with_message(name.to_string());
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(total),
            Ok(n) => {
                if let Err(e) = out.write_all(&buf[..n]) {
                    break Err((total, e));
                }
                total += n as u64;
                bar.set_position(total);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err((total, e)),
        }
    };
    bar.finish_and_clear();
    result
}
