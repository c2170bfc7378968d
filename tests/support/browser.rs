//! A real headless Chromium driven through WebDriver (Debian's `chromium`
//! and `chromium-driver`, installed by scripts/install-test-deps.sh), with
//! a blocking API so tests mix it freely with the rest of the harness.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::Value;

use crate::support::{free_port, wait_for, Proc};

pub const TAB: char = '\u{E004}';
pub const ENTER: char = '\u{E007}';

/// The `chromedriver` and `chromium` binaries, or None (skip) outside CI.
pub fn available() -> bool {
    super::require_tool("chromedriver") && super::require_tool("chromium")
}

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Proc,
    base: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height`
    /// pointed at `base` (the server's URL).
    pub fn start(base: &str, width: u32, height: u32) -> Browser {
        Browser::start_with(base, width, height, true)
    }

    /// A browser with JavaScript turned off (`javascript: false`).
    pub fn start_with(base: &str, width: u32, height: u32, javascript: bool) -> Browser {
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command.arg(format!("--port={port}"));
        let driver = Proc::spawn_command(command);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let capabilities: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions", format!("--window-size={width},{height}")],
                "prefs": { "profile.managed_default_content_settings.javascript": if javascript { 1 } else { 2 } },
            }
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let attempt = runtime.block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities.clone())
                    .connect(&url),
            );
            match attempt {
                Ok(client) => break client,
                Err(error) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("cannot start Chromium through chromedriver: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        Browser {
            runtime,
            client: Some(client),
            _driver: driver,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the browser is open")
    }

    pub fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.runtime.block_on(self.client().goto(&url)).unwrap();
    }

    pub fn path(&self) -> String {
        let url = self.runtime.block_on(self.client().current_url()).unwrap();
        url.path().to_string()
    }

    /// The text of the first element matching `css`, or None.
    pub fn text(&self, css: &str) -> Option<String> {
        self.runtime.block_on(async {
            let element = self.client().find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
    }

    pub fn exists(&self, css: &str) -> bool {
        self.runtime
            .block_on(self.client().find_all(Locator::Css(css)))
            .map(|found| !found.is_empty())
            .unwrap_or(false)
    }

    /// Waits until the element's text contains `needle`; returns the text.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> String {
        wait_for(&format!("{css} to contain {needle:?}"), timeout, || {
            self.text(css).filter(|t| t.contains(needle))
        })
    }

    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            element.click().await.unwrap();
        });
    }

    pub fn fill(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"));
            element.clear().await.unwrap();
            element.send_keys(text).await.unwrap();
        });
    }

    /// Types into whatever has the focus, as a keyboard user would.
    pub fn keys(&self, keys: &str) {
        self.runtime.block_on(async {
            let element = self.client().active_element().await.unwrap();
            element.send_keys(keys).await.unwrap();
        });
    }

    /// Runs `script` in the page; its `return` value.
    pub fn js(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap()
    }

    /// Describes the focused element: `tag#id.class "text"`.
    pub fn focused(&self) -> String {
        self.js(
            "const e = document.activeElement; \
             return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' ' + (e.textContent || '').trim().slice(0, 40);",
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Saves a PNG of the page as `NAME.png` in `GANTRY_UI_SCREENSHOT_DIR`
    /// (docs/ui to refresh the documentation's), else target/ui-screenshots.
    pub fn screenshot(&self, name: &str) {
        let dir = std::env::var_os("GANTRY_UI_SCREENSHOT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.runtime.block_on(self.client().screenshot()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub fn set_size(&self, width: u32, height: u32) {
        self.runtime
            .block_on(self.client().set_window_size(width, height))
            .unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
    }
}
