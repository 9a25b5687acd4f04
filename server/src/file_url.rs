//! Where an index page or packument may send Orchard for a file.
//!
//! Upstream content is untrusted: a page can name a file URL on any host, including
//! Orchard's own network neighbours (SSRF). The rules, in order:
//!
//! 1. Only `http` and `https`, and no credentials in the URL.
//! 2. The source's own origin (scheme, host, port) is always allowed; the source's
//!    credentials go there and nowhere else (`http_client`).
//! 3. Any other host must be listed in the source's `fileHosts` (`host` or
//!    `host:port`); such a file is fetched without credentials and needs a declared
//!    sha256 or sha512, so what is stored is what the index vouched for.
//! 4. An off-origin host that is, or resolves to, a loopback, private, link-local,
//!    unique-local, unspecified, multicast or otherwise internal address is refused
//!    unless the source itself is on such an address (a registry inside the cluster).
//!
//! A refusal is a 502 whose message names the rule; nothing is fetched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ApiError;
use crate::sources::{parse_file_host, Source};
use crate::storage::Expected;

/// Why a file URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is not an http(s) URL")]
    Scheme,
    #[error("it carries credentials")]
    Credentials,
    #[error("host {0} is neither the source's origin nor listed in its fileHosts")]
    OffOrigin(String),
    #[error("host {0} is in fileHosts, but the index declares no sha256 or sha512 for the file")]
    NoDigest(String),
    #[error("host {0} is an internal address ({1}) and the source is not on one")]
    Internal(String, IpAddr),
    #[error("host {0} cannot be resolved")]
    Unresolvable(String),
}

impl Refusal {
    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Scheme => "scheme",
            Refusal::Credentials => "credentials",
            Refusal::OffOrigin(_) => "off_origin",
            Refusal::NoDigest(_) => "no_digest",
            Refusal::Internal(..) => "internal_address",
            Refusal::Unresolvable(_) => "unresolvable",
        }
    }
}

/// What the rules allow for a URL that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// On the source's own origin: credentials apply.
    SameOrigin,
    /// On a listed file host: no credentials; its addresses still need checking.
    FileHost { host: String, port: u16 },
}

/// The synchronous rules (1–3).
pub fn check(source: &Source, raw: &str, expected: &Expected) -> Result<Allowed, Refusal> {
    let url = url::Url::parse(raw).map_err(|_| Refusal::Scheme)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Refusal::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Credentials);
    }
    if url.origin() == source.base.origin() {
        return Ok(Allowed::SameOrigin);
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = url.port_or_known_default().unwrap_or(0);
    let shown = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let listed = source
        .spec
        .file_hosts
        .iter()
        .filter_map(|e| parse_file_host(e).ok())
        .any(|(h, p)| h == host && p.is_none_or(|p| p == port));
    if !listed {
        return Err(Refusal::OffOrigin(shown));
    }
    if expected.sha256.is_none() && expected.sha512.is_none() {
        return Err(Refusal::NoDigest(shown));
    }
    Ok(Allowed::FileHost { host, port })
}

/// Loopback, private, link-local, unique-local, unspecified, multicast, documentation,
/// shared (CGNAT) and IPv4-mapped forms of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // site local (deprecated)
                || seg0 == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || is_nat64_internal(v6)
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64.0.0/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240 // reserved
}

/// 64:ff9b::/96 carrying an internal IPv4 address.
fn is_nat64_internal(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return is_internal_v4(v4);
    }
    false
}

async fn addresses(host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let found = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|_| Refusal::Unresolvable(host.to_string()))?;
    let ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    if ips.is_empty() {
        return Err(Refusal::Unresolvable(host.to_string()));
    }
    Ok(ips)
}

/// Rule 4: an off-origin host must not be internal unless the source is.
pub async fn check_addresses(source: &Source, host: &str, port: u16) -> Result<(), Refusal> {
    let ips = addresses(host, port).await?;
    let Some(bad) = ips.iter().copied().find(|ip| is_internal(*ip)) else {
        return Ok(());
    };
    let source_host = source.base.host_str().unwrap_or_default();
    let source_port = source.base.port_or_known_default().unwrap_or(0);
    let source_internal = match addresses(source_host, source_port).await {
        Ok(own) => own.iter().any(|ip| is_internal(*ip)),
        Err(_) => false,
    };
    if source_internal {
        Ok(())
    } else {
        Err(Refusal::Internal(host.to_string(), bad))
    }
}

/// All rules; the URL to fetch, or a 502 that names the rule.
pub async fn vet(source: &Source, raw: &str, expected: &Expected) -> Result<String, ApiError> {
    let outcome = match check(source, raw, expected) {
        Ok(Allowed::SameOrigin) => Ok(()),
        Ok(Allowed::FileHost { host, port }) => check_addresses(source, &host, port).await,
        Err(r) => Err(r),
    };
    match outcome {
        Ok(()) => Ok(raw.to_string()),
        Err(r) => {
            crate::metrics::metrics()
                .file_url_refusals
                .with_label_values(&[source.name(), r.label()])
                .inc();
            tracing::warn!(upstream.source = source.name(), reason = r.label(), url = %redact(raw), "refused a file URL from the upstream's index");
            Err(ApiError::BadGateway(format!(
                "refused the file URL the upstream index gives: {r}"
            )))
        }
    }
}

/// A URL for logs: no userinfo, no query (tokens live there), no fragment.
pub fn redact(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<not a URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Protocol, SourceSettings, SourceSpec};

    fn source(url: &str, file_hosts: &[&str]) -> Source {
        let spec = SourceSpec {
            name: "s".into(),
            settings: SourceSettings {
                protocol: Protocol::Pypi,
                url: url.into(),
                priority: 1,
                enabled: true,
                ttl: None,
                include: vec![],
                exclude: vec![],
                file_hosts: file_hosts.iter().map(|s| s.to_string()).collect(),
            },
            credentials: None,
        };
        Source {
            base: url::Url::parse(&spec.url).unwrap(),
            spec,
        }
    }

    fn sha256() -> Expected {
        Expected {
            sha256: Some("ab".repeat(32)),
            ..Default::default()
        }
    }

    #[test]
    fn same_origin_only_by_scheme_host_and_port() {
        let s = source("https://upstream.example/simple/", &[]);
        assert_eq!(
            check(
                &s,
                "https://upstream.example/files/a.whl",
                &Expected::default()
            ),
            Ok(Allowed::SameOrigin)
        );
        assert_eq!(
            check(
                &s,
                "https://upstream.example:443/files/a.whl",
                &Expected::default()
            ),
            Ok(Allowed::SameOrigin)
        );
        for other in [
            "http://upstream.example/a.whl",
            "https://upstream.example:8443/a.whl",
            "https://evil.example/a.whl",
            "https://upstream.example.evil.example/a.whl",
            "http://127.0.0.1:18501/steal/a.whl",
        ] {
            assert!(
                matches!(check(&s, other, &sha256()), Err(Refusal::OffOrigin(_))),
                "{other}"
            );
        }
        assert_eq!(
            check(&s, "ftp://upstream.example/a.whl", &sha256()),
            Err(Refusal::Scheme)
        );
        assert_eq!(
            check(&s, "file:///etc/passwd", &sha256()),
            Err(Refusal::Scheme)
        );
        assert_eq!(
            check(&s, "https://u:p@upstream.example/a.whl", &sha256()),
            Err(Refusal::Credentials)
        );
    }

    #[test]
    fn file_hosts_need_a_declared_strong_digest() {
        let s = source(
            "https://upstream.example/simple/",
            &["files.upstream.example", "cdn.example:8443"],
        );
        let ok = check(&s, "https://files.upstream.example/a.whl", &sha256());
        assert_eq!(
            ok,
            Ok(Allowed::FileHost {
                host: "files.upstream.example".into(),
                port: 443
            })
        );
        assert!(check(&s, "https://FILES.upstream.example/a.whl", &sha256()).is_ok());
        assert!(check(&s, "https://cdn.example:8443/a.whl", &sha256()).is_ok());
        assert!(matches!(
            check(&s, "https://cdn.example/a.whl", &sha256()),
            Err(Refusal::OffOrigin(_))
        ));
        let sha1_only = Expected {
            sha1: Some("ab".repeat(20)),
            ..Default::default()
        };
        assert!(matches!(
            check(&s, "https://files.upstream.example/a.whl", &sha1_only),
            Err(Refusal::NoDigest(_))
        ));
        let sha512 = Expected {
            sha512: Some("ab".repeat(64)),
            ..Default::default()
        };
        assert!(check(&s, "https://files.upstream.example/a.whl", &sha512).is_ok());
    }

    #[test]
    fn file_host_entries_are_bare_hosts() {
        assert_eq!(
            parse_file_host("cdn.example:8443"),
            Ok(("cdn.example".into(), Some(8443)))
        );
        assert_eq!(
            parse_file_host("[::1]:9000"),
            Ok(("[::1]".into(), Some(9000)))
        );
        for bad in [
            "",
            "https://cdn.example",
            "cdn.example/path",
            "cdn.example:99999",
            "user@cdn.example",
            "cdn example",
        ] {
            assert!(parse_file_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn internal_file_hosts_only_for_internal_sources() {
        let public = source(
            "https://93.184.216.34/simple/",
            &["127.0.0.1:9", "[::1]", "localhost"],
        );
        assert!(matches!(
            check_addresses(&public, "127.0.0.1", 9).await,
            Err(Refusal::Internal(..))
        ));
        assert!(matches!(
            check_addresses(&public, "[::1]", 443).await,
            Err(Refusal::Internal(..))
        ));
        assert!(
            matches!(
                check_addresses(&public, "localhost", 443).await,
                Err(Refusal::Internal(..))
            ),
            "names that resolve to loopback"
        );
        let internal = source("http://127.0.0.1:8080/simple/", &["127.0.0.1:9"]);
        assert_eq!(check_addresses(&internal, "127.0.0.1", 9).await, Ok(()));
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("https://u:secret@upstream.example/a.whl?token=abc#sha256=1"),
            "https://upstream.example/a.whl?redacted"
        );
    }
}
