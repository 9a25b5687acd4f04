//! Orchard as a client of itself: resolution and ensure files go through the package
//! routes on the loopback interface, so every fetch takes the same path as a client's
//! (merged views, single-flight, verification, extraction hooks, metrics).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use awc::http::header;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256, Sha512};

use crate::proxy::Flow;

pub struct Local {
    base: String,
    client: awc::Client,
    max_document: usize,
}

/// What streaming an artifact through Orchard gave.
pub struct Fetched {
    pub status: u16,
    /// `X-Orchard-Cache` of the response (`hit`, `miss`, …).
    pub cache: String,
    pub sha256: String,
    pub sha512: Vec<u8>,
    pub size: u64,
    pub error: Option<String>,
}

impl Local {
    pub fn new(state: &Flow) -> Local {
        let addr = state.config.server.listen_addr;
        let ip = match addr.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            other => other,
        };
        let host = match ip {
            IpAddr::V4(v) => v.to_string(),
            IpAddr::V6(v) => format!("[{v}]"),
        };
        Local {
            base: format!("http://{host}:{}", addr.port()),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(900))
                .finish(),
            max_document: state.config.max_index_bytes,
        }
    }
}

/// Marks Orchard's own request for a parent or imported POM: storing it does not start
/// that POM's own extraction, so one extraction fetches a bounded set of POMs instead of
/// cascading through an endless parent chain (honoured from loopback peers only).
pub const PARENT_POM_HEADER: &str = "x-orchard-parent-pom";

impl Local {
    /// GET a parent or imported POM for an extraction.
    pub async fn parent_pom(&self, path: &str) -> Result<(u16, Bytes), String> {
        self.get_document(path, "*/*", Some((PARENT_POM_HEADER, "1")))
            .await
    }

    /// GET a document (page, packument, POM) into memory.
    pub async fn document(&self, path: &str, accept: &str) -> Result<(u16, Bytes), String> {
        self.get_document(path, accept, None).await
    }

    async fn get_document(
        &self,
        path: &str,
        accept: &str,
        extra: Option<(&str, &str)>,
    ) -> Result<(u16, Bytes), String> {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .insert_header((header::ACCEPT, accept));
        if let Some(h) = extra {
            req = req.insert_header(h);
        }
        let mut res = req.send().await.map_err(|e| format!("GET {path}: {e}"))?;
        let status = res.status().as_u16();
        let body = res
            .body()
            .limit(self.max_document)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, body))
    }

    /// GET an artifact and stream it through, hashing it (the bytes are not kept).
    pub async fn fetch(&self, path: &str) -> Fetched {
        let mut out = Fetched {
            status: 0,
            cache: String::new(),
            sha256: String::new(),
            sha512: vec![],
            size: 0,
            error: None,
        };
        let mut res = match self.client.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(format!("GET {path}: {e}"));
                return out;
            }
        };
        out.status = res.status().as_u16();
        out.cache = res
            .headers()
            .get("x-orchard-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if out.status != 200 {
            let body = res.body().limit(64 * 1024).await.unwrap_or_default();
            out.error = Some(format!(
                "{} {}",
                out.status,
                String::from_utf8_lossy(&body).trim()
            ));
            return out;
        }
        let (mut h256, mut h512) = (Sha256::new(), Sha512::new());
        while let Some(chunk) = res.next().await {
            match chunk {
                Ok(c) => {
                    h256.update(&c);
                    h512.update(&c);
                    out.size += c.len() as u64;
                }
                Err(e) => {
                    out.error = Some(format!("GET {path}: body: {e}"));
                    return out;
                }
            }
        }
        out.sha256 = hex::encode(h256.finalize());
        out.sha512 = h512.finalize().to_vec();
        out
    }
}
