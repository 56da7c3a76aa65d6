//! A small static file server for the built page, on 127.0.0.1 only.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Result, anyhow};
use tiny_http::{Header, Request, Response, StatusCode};

/// The page's folder served on a loopback port, from a background thread.
pub struct Server {
    server: Arc<tiny_http::Server>,
    port: u16,
    thread: JoinHandle<()>,
}

impl Server {
    /// Serves `root` on 127.0.0.1:`port` (0: any free port).
    pub fn start(root: &Path, port: u16) -> Result<Self> {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| anyhow!("the server has no IP address"))?;
        let server = Arc::new(server);
        let root = root.to_path_buf();
        let serving = Arc::clone(&server);
        let thread = std::thread::spawn(move || {
            for request in serving.incoming_requests() {
                respond(&root, request);
            }
        });
        Ok(Server {
            server,
            port,
            thread,
        })
    }

    /// The page's address.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Serves until the process ends.
    pub fn wait(self) {
        // The thread only ends when the server is unblocked, which `--serve` never does.
        let _ = self.thread.join();
    }

    /// Stops serving.
    pub fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}

/// The file a request path names under `root`: `index.html` for a folder, `None` for a path
/// that leaves `root`.
fn file_for(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let mut file = root.to_path_buf();
    for component in Path::new(path.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => file.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    Some(file)
}

/// The media type of a file of the page (module scripts and streaming wasm compilation need
/// the right ones).
fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

fn respond(root: &Path, request: Request) {
    let found = file_for(root, request.url()).and_then(|f| Some((std::fs::read(&f).ok()?, f)));
    let response = match found {
        Some((bytes, file)) => {
            let header =
                Header::from_bytes("Content-Type", content_type(&file)).expect("a valid header");
            Response::from_data(bytes).with_header(header)
        }
        None => Response::from_string("not found").with_status_code(StatusCode(404)),
    };
    // A client that went away is no error of the server's.
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/page");
        assert_eq!(
            file_for(root, "/pkg/ddpm_web.js?x=1"),
            Some(root.join("pkg/ddpm_web.js"))
        );
        assert_eq!(file_for(root, "/../etc/passwd"), None);
        assert_eq!(file_for(root, "/pkg/../../x"), None);
        assert_eq!(content_type(Path::new("a.wasm")), "application/wasm");
    }
}
