//! A small HTTP/1.1 server on 127.0.0.1 for the download tests: each path has a list of
//! replies, served in order (the last one repeats). It stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Ok(Vec<u8>),
    /// 404.
    NotFound,
    /// 200 announcing this body's full length, then only its first half, then close.
    Cut(Vec<u8>),
}

/// A running server.
pub struct Server {
    base: String,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `routes` (path without the leading `/` -> replies); unknown paths get 404.
    pub fn start(routes: Vec<(&str, Vec<Reply>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let routes: HashMap<String, Vec<Reply>> = routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect();
        let routes = Arc::new(Mutex::new(routes));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let handle = std::thread::spawn(move || {
            // Bounded: a test never needs more than a few dozen connections.
            for stream in listener.incoming().take(200) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                requests2.fetch_add(1, Ordering::SeqCst);
                let _ = handle(stream, &routes);
            }
        });
        Server {
            base,
            stop,
            requests,
            handle: Some(handle),
        }
    }

    /// Base URL, ending with `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Number of connections served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn handle(stream: TcpStream, routes: &Mutex<HashMap<String, Vec<Reply>>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let reply = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&path) {
            Some(list) if list.len() > 1 => list.remove(0),
            Some(list) => list[0].clone(),
            None => Reply::NotFound,
        }
    };
    let mut stream = stream;
    let head = |status: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match reply {
        Reply::Ok(body) => {
            stream.write_all(head("200 OK", body.len()).as_bytes())?;
            stream.write_all(&body)?;
        }
        Reply::NotFound => stream.write_all(head("404 Not Found", 0).as_bytes())?,
        Reply::Cut(body) => {
            stream.write_all(head("200 OK", body.len()).as_bytes())?;
            stream.write_all(&body[..body.len() / 2])?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(
            self.base
                .trim_start_matches("http://")
                .trim_end_matches('/'),
        );
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
