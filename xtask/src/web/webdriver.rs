//! Just enough W3C WebDriver to drive headless Chromium: a `chromedriver` started on a loopback
//! port, one session, navigation, scripts and screenshots (JSON over HTTP with ureq).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// The browser binary and its driver (Debian's `chromium` and `chromium-driver` packages).
pub const CHROMIUM: &str = "chromium";
/// The WebDriver server for Chromium.
pub const CHROMEDRIVER: &str = "chromedriver";

/// The key of a W3C WebDriver element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session behind a `chromedriver` child process; both end on drop.
pub struct Browser {
    agent: ureq::Agent,
    session: String,
    driver_url: String,
    driver: Child,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot start {CHROMEDRIVER}: apt-get install chromium chromium-driver")
            })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            agent,
            session: String::new(),
            driver_url,
            driver,
        };
        browser.wait_until_ready()?;
        let chromium = which(CHROMIUM).unwrap_or_else(|| CHROMIUM.into());
        let created = browser.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", format!("--window-size={width},{height}"),
                    ],
                },
            }}})),
        )?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("chromedriver gave no session id: {created}"))?
            .to_string();
        Ok(browser)
    }

    fn wait_until_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        loop {
            let ready = self
                .agent
                .get(format!("{}/status", self.driver_url))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                return Ok(());
            }
            if let Some(status) = self.driver.try_wait()? {
                bail!("{CHROMEDRIVER} exited at start ({status})");
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("{CHROMEDRIVER} did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One WebDriver command: its `value`, or the driver's error message.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.driver_url);
        let mut response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        }
        .with_context(|| format!("WebDriver {method} {path}"))?;
        let status = response.status();
        let reply: Value = response
            .body_mut()
            .read_json()
            .with_context(|| format!("WebDriver {method} {path}: no JSON reply"))?;
        if !status.is_success() {
            bail!(
                "WebDriver {method} {path}: HTTP {status}: {}",
                reply["value"]["message"]
            );
        }
        Ok(reply["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn execute(&self, script: &str) -> Result<Value> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Runs `script` every 100 ms until it returns something other than `null`, for at most
    /// `timeout`.
    pub fn wait_for(&self, script: &str, timeout: Duration) -> Result<Value> {
        let start = Instant::now();
        loop {
            let value = self.execute(script)?;
            if !value.is_null() {
                return Ok(value);
            }
            if start.elapsed() > timeout {
                bail!("the page did not answer within {timeout:?} ({script})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Chooses `files` in the file input that `css` selects, as a user would.
    pub fn choose_files(&self, css: &str, files: &[&Path]) -> Result<()> {
        let found = self.session_call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        let element = found[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| anyhow!("no element {css}: {found}"))?;
        let text: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text.join("\n") })),
        )
        .map(drop)
    }

    /// A PNG screenshot of the window.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        use base64::Engine;
        let encoded = self.session_call("GET", "/screenshot", None)?;
        let text = encoded
            .as_str()
            .ok_or_else(|| anyhow!("the screenshot is not a string"))?;
        Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Best effort: the driver is killed next in any case.
            let _ = self.session_call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The full path of `program` on `PATH`.
pub fn which(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|file| file.is_file())
        .map(|file| file.display().to_string())
}
