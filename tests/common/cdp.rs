//! A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (fd 3: commands in,
//! fd 4: replies and events out, each message JSON ending in a NUL byte), enough to open a page in
//! headless Chromium, collect what it logs and requests, evaluate a script and take a screenshot.
//! No browser download and no websocket: Debian's `chromium` package and two pipes.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Finds Chromium: `SWEEP_CHROMIUM`, else `chromium`, `chromium-browser` or `google-chrome` on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWEEP_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Chromium for a browser test: Some(path); None (after saying why) when it is missing outside
/// CI; a panic when it is missing under CI=true, where the test must run.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match find_chromium() {
        Some(p) => Some(p),
        None if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
            "{test}: Chromium is required under CI=true and was not found: install Debian's `chromium` package (apt-get install chromium; .ci/run does) or set SWEEP_CHROMIUM to the browser"
        ),
        None => {
            eprintln!("{test}: SKIPPED: no Chromium found (apt-get install chromium, or set SWEEP_CHROMIUM)");
            None
        }
    }
}

/// A headless Chromium driven over the DevTools pipe; killed when dropped.
pub struct Browser {
    child: Child,
    tx: std::fs::File,
    rx: Receiver<Value>,
    next_id: u64,
    /// Every event received so far (method, params, sessionId).
    pub events: Vec<Value>,
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile in `user_data_dir`, offline flags and the
    /// DevTools pipe.
    pub fn launch(chromium: &Path, user_data_dir: &Path) -> Browser {
        let (to_chrome_r, to_chrome_w) = pipe();
        let (from_chrome_r, from_chrome_w) = pipe();
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--mute-audio",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", user_data_dir.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move both ends above 3 and 4 first, so dup2 cannot clobber one with the other;
                // the dup2 copies are inherited (no close-on-exec).
                let a = libc::fcntl(to_chrome_r, libc::F_DUPFD, 10);
                let b = libc::fcntl(from_chrome_w, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", chromium.display()));
        // SAFETY: the descriptors are ours; the child has its copies.
        unsafe {
            libc::close(to_chrome_r);
            libc::close(from_chrome_w);
        }
        let tx = unsafe { std::fs::File::from_raw_fd(to_chrome_w) };
        let mut reader = unsafe { std::fs::File::from_raw_fd(from_chrome_r) };
        let (send, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            loop {
                let n = match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if send.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Browser { child, tx, rx, next_id: 0, events: Vec::new() }
    }

    /// Sends a command and waits for its reply (events meanwhile are kept in `events`).
    pub fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.tx.write_all(&bytes).unwrap_or_else(|e| panic!("sending {method} to Chromium: {e}"));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) if v.get("id").and_then(Value::as_u64) == Some(id) => {
                    if let Some(err) = v.get("error") {
                        panic!("Chromium refused {method}: {err}");
                    }
                    return v["result"].clone();
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => panic!("Chromium did not answer {method} within 120 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("Chromium exited while waiting for {method}"),
            }
        }
    }

    /// Waits until an event `method` has arrived (already or within `timeout`).
    pub fn wait_event(&mut self, method: &str, timeout: Duration) -> Option<Value> {
        if let Some(e) = self.events.iter().find(|e| e["method"] == method) {
            return Some(e.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => {
                    let hit = v["method"] == method;
                    self.events.push(v.clone());
                    if hit {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Takes in whatever events arrived during `d`.
    pub fn settle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(v) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.events.push(v);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What opening a page found.
#[derive(Debug)]
pub struct PageCheck {
    /// The value the check script returned.
    pub result: Value,
    /// Errors the page logged: uncaught exceptions, console.error/assert, failed loads.
    pub errors: Vec<String>,
    /// Requests for anything but file: and data: URLs (there must be none: no network).
    pub remote_requests: Vec<String>,
}

/// Opens `page` (a local file) in a fresh headless Chromium, waits for it to load, evaluates
/// `script` (an expression giving a JSON-able value) and writes a full-page PNG to `screenshot`.
pub fn check_page(chromium: &Path, profile: &Path, page: &Path, script: &str, screenshot: &Path) -> PageCheck {
    let mut b = Browser::launch(chromium, profile);
    let target = b.call("Target.createTarget", json!({ "url": "about:blank" }), None);
    let target_id = target["targetId"].as_str().expect("a target id").to_string();
    let attached = b.call("Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }), None);
    let s = attached["sessionId"].as_str().expect("a session id").to_string();
    let s = Some(s.as_str());
    for m in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
        b.call(m, json!({}), s);
    }
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        s,
    );
    let url = format!("file://{}", page.canonicalize().expect("the page exists").display());
    let nav = b.call("Page.navigate", json!({ "url": url }), s);
    assert!(nav.get("errorText").is_none(), "navigating to {url}: {nav}");
    b.wait_event("Page.loadEventFired", Duration::from_secs(120)).expect("the page loads within 120 s");
    b.settle(Duration::from_millis(300));
    let eval =
        b.call("Runtime.evaluate", json!({ "expression": script, "returnByValue": true, "awaitPromise": true }), s);
    if let Some(ex) = eval.get("exceptionDetails") {
        panic!("the check script threw: {ex}");
    }
    let result = eval["result"]["value"].clone();
    let metrics = b.call("Page.getLayoutMetrics", json!({}), s);
    let size = &metrics["cssContentSize"];
    let (w, h) = (size["width"].as_f64().unwrap_or(1200.0), size["height"].as_f64().unwrap_or(900.0));
    let shot = b.call(
        "Page.captureScreenshot",
        json!({ "format": "png", "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": w, "height": h.min(30000.0), "scale": 1 } }),
        s,
    );
    let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
    std::fs::write(screenshot, &png).unwrap();
    b.settle(Duration::from_millis(100));
    let mut errors = Vec::new();
    let mut remote_requests = Vec::new();
    for e in &b.events {
        let p = &e["params"];
        match e["method"].as_str().unwrap_or("") {
            "Runtime.exceptionThrown" => errors.push(format!("exception: {}", p["exceptionDetails"])),
            "Runtime.consoleAPICalled" if matches!(p["type"].as_str(), Some("error" | "assert")) => {
                errors.push(format!("console.{}: {}", p["type"].as_str().unwrap_or(""), p["args"]))
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                errors.push(format!("log: {} {}", p["entry"]["text"], p["entry"]["url"]))
            }
            "Network.requestWillBeSent" => {
                let u = p["request"]["url"].as_str().unwrap_or("");
                if !(u.starts_with("file:") || u.starts_with("data:") || u.starts_with("about:")) {
                    remote_requests.push(u.to_string());
                }
            }
            "Network.loadingFailed" => errors.push(format!("failed to load: {}", p)),
            _ => {}
        }
    }
    let _ = b.call("Browser.close", json!({}), None);
    PageCheck { result, errors, remote_requests }
}

/// Standard base64 (with padding) to bytes.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", c as char),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= if c == b'=' { 0 } else { val(c) } << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}
