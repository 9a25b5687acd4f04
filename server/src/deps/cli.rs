//! `orchard ensure FILE --server URL`: sends an ensure file to a running Orchard
//! (`POST /api/v1/ensure`, NDJSON progress), shows a progress bar, prints what failed
//! and exits non-zero if anything did.

use std::time::Duration;

use awc::http::header;
use futures::StreamExt;
use serde::Deserialize;

use super::ensure::{Item, Summary};

pub struct EnsureArgs {
    pub file: std::path::PathBuf,
    pub server: String,
    pub token: Option<String>,
    pub python_version: Option<String>,
    pub platform: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_text_cannot_drive_the_terminal() {
        assert_eq!(
            super::printable("ok \u{1b}[2Jcleared\tx"),
            "ok ?[2Jcleared?x"
        );
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    entries: Option<u64>,
    #[serde(default)]
    items: Option<Vec<Item>>,
    #[serde(default)]
    summary: Option<Summary>,
}

/// Text from the server with control characters (terminal escapes) replaced.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

/// 0 = everything cached or fetched, 1 = something failed, 2 = the request itself failed.
pub fn run(args: EnsureArgs) -> u8 {
    let body = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("orchard ensure: cannot read {}: {e}", args.file.display());
            return 2;
        }
    };
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let mut url = format!("{}/api/v1/ensure", args.server.trim_end_matches('/'));
        let mut query = Vec::new();
        if let Some(v) = &args.python_version {
            query.push(format!("python_version={v}"));
        }
        if let Some(p) = &args.platform {
            query.push(format!("platform={p}"));
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(3600))
            .finish();
        let mut request = client
            .post(&url)
            .insert_header((header::ACCEPT, "application/x-ndjson"));
        if let Some(t) = &args.token {
            request = request.insert_header((header::AUTHORIZATION, format!("Bearer {t}")));
        }
        let mut res = match request.send_body(body).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("orchard ensure: {url}: {e}");
                return 2;
            }
        };
        if !res.status().is_success() {
            let text = res.body().limit(1 << 20).await.unwrap_or_default();
            eprintln!(
                "orchard ensure: HTTP {}: {}",
                res.status().as_u16(),
                printable(String::from_utf8_lossy(&text).trim())
            );
            return 2;
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{bar:30}] {pos}/{len} entries {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let mut buf: Vec<u8> = Vec::new();
        let mut summary = None;
        let mut failures: Vec<Item> = Vec::new();
        while let Some(chunk) = res.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    bar.abandon();
                    eprintln!("orchard ensure: the response broke off: {e}");
                    return 2;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let Ok(line) = serde_json::from_slice::<Line>(&line) else {
                    continue;
                };
                if let Some(n) = line.entries {
                    bar.set_length(n);
                }
                if let Some(items) = line.items {
                    bar.inc(1);
                    if let Some(first) = items.first() {
                        bar.set_message(printable(&format!(
                            "{} {}",
                            first.name,
                            first.version.clone().unwrap_or_default()
                        )));
                    }
                    failures.extend(
                        items
                            .into_iter()
                            .filter(|i| i.status == super::ensure::ItemStatus::Failed),
                    );
                }
                if let Some(s) = line.summary {
                    summary = Some(s);
                }
            }
        }
        bar.finish_and_clear();
        for f in &failures {
            let line = format!(
                "failed: {} {} {}{}: {}",
                f.protocol,
                f.name,
                f.version.clone().unwrap_or_default(),
                f.file
                    .as_ref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default(),
                f.reason.clone().unwrap_or_default()
            );
            eprintln!("{}", printable(&line));
        }
        match summary {
            Some(s) => {
                println!(
                    "ensure: {} files: {} cached, {} fetched, {} failed",
                    s.total, s.cached, s.fetched, s.failed
                );
                u8::from(s.failed > 0)
            }
            None => {
                eprintln!("orchard ensure: the server sent no summary");
                2
            }
        }
    })
}
