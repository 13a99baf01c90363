//! A real headless browser for tests: Debian's Chromium driven over WebDriver by its ChromeDriver.
//!
//! `cargo xtask setup` installs both (`chromium`, `chromium-driver`) when they are missing; `M6REC_CHROMIUM` and
//! `M6REC_CHROMEDRIVER` point elsewhere. The browser starts with no network of its own (no background networking,
//! sync or component updates), in a fresh profile that ChromeDriver removes when the session ends.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One ChromeDriver process with one browser session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
}

fn locate(var: &str, default: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found. HINT: run `cargo xtask setup` (installs Debian's chromium and chromium-driver), or set {var}",
            path.display()
        ))
    }
}

/// The `value` of a WebDriver answer, or its error message.
fn answer(r: Result<ureq::Response, ureq::Error>, what: &str) -> Result<Value, String> {
    let body: Value = match r {
        Ok(resp) => resp.into_json().map_err(|e| format!("{what}: unreadable answer: {e}"))?,
        Err(ureq::Error::Status(code, resp)) => {
            let v: Value = resp.into_json().unwrap_or(Value::Null);
            return Err(format!("{what}: HTTP {code}: {}", v["value"]["message"].as_str().unwrap_or("no message")));
        }
        Err(e) => return Err(format!("{what}: {e}")),
    };
    Ok(body["value"].clone())
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless Chromium session.
    pub fn start() -> Result<Self, String> {
        let chromium = locate("M6REC_CHROMIUM", "/usr/bin/chromium")?;
        let chromedriver = locate("M6REC_CHROMEDRIVER", "/usr/bin/chromedriver")?;
        let port = crate::process::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser { driver, base, session: String::new() };
        let start = Instant::now();
        while !ureq::get(&format!("{}/status", browser.base)).call().is_ok_and(|r| r.status() == 200) {
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("{} did not answer on port {port} within 20 s", chromedriver.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,2000",
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = answer(ureq::post(&format!("{}/session", browser.base)).send_json(caps), "starting Chromium")?;
        browser.session = v["sessionId"].as_str().ok_or_else(|| format!("no session id in {v}"))?.to_string();
        Ok(browser)
    }

    fn url(&self, route: &str) -> String {
        format!("{}/session/{}/{route}", self.base, self.session)
    }

    /// Opens `url` and waits for its load event (every image, fetched or refused, has settled by then).
    pub fn open(&self, url: &str) -> Result<(), String> {
        answer(ureq::post(&self.url("url")).send_json(json!({ "url": url })), url).map(|_| ())
    }

    /// Runs `script` (a function body: `return ...`) in the page and gives back what it returned.
    pub fn eval(&self, script: &str) -> Result<Value, String> {
        let body = json!({"script": script, "args": []});
        answer(ureq::post(&self.url("execute/sync")).send_json(body), "running a script in the page")
    }

    /// A PNG screenshot of the window, base64-encoded as WebDriver gives it.
    pub fn screenshot_base64(&self) -> Result<String, String> {
        let v = answer(ureq::get(&self.url("screenshot")).call(), "taking a screenshot")?;
        v.as_str().map(str::to_string).ok_or_else(|| format!("screenshot: not a string: {v}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
