//! Headless Chromium for the console tests: Debian's `chromium` driven over WebDriver by
//! `chromedriver` on a free loopback port (fantoccini, plain HTTP).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::json;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long to wait for anything the browser should show.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// chromedriver on a free loopback port, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver, or says why it cannot (a failure under CI).
pub fn chromedriver() -> Option<Driver> {
    let missing: Vec<&str> = [CHROMEDRIVER, CHROMIUM]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        let why = format!(
            "{} not installed (apt-get install chromium chromium-driver)",
            missing.join(" and ")
        );
        if std::env::var_os("CI").is_some() {
            panic!("under CI the console browser tests must run: {why}");
        }
        eprintln!("skipping the console browser test: {why}");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(driver)
}

/// A fresh headless Chromium session (its own profile, so its own cookies).
pub async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1100,1400",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless Chromium")
}

pub async fn wait_for(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string());
            let source = c.source().await.unwrap_or_default();
            panic!("{css} did not appear at {url:?}: {e}\n{source}");
        }
    }
}

/// The text of the element `css` once it appears. A page that replaces itself between finding
/// the element and reading it (a form's redirect, a live update) is read again, not a failure.
pub async fn text_of(c: &Client, css: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match wait_for(c, css).await.text().await {
            Ok(text) => return text,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reading {css} again: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{css} could not be read: {e}"),
        }
    }
}

/// The `name=value` a response sets for cookie `name`, if any (for the requests a test makes
/// without the browser).
pub fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}
