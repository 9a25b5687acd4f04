//! Packuments: parsed once on fetch (on the blocking pool), stored with tarball URLs
//! already rewritten to Orchard paths behind a base-URL placeholder, rendered per
//! request by substituting the client's base URL.
//!
//! Stored form (one string, no double JSON escaping of a possibly huge document): the
//! packument JSON, then a last line with the JSON map of tarball file → upstream
//! reference (written after the document so that the document is built in place).

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::names::{is_valid_tarball, PackageName};
use crate::storage::Expected;

/// Stands for the scheme://host of the client's request in stored packuments.
pub const BASE: &str = "@@ORCHARD_BASE@@";

/// Names the stored form in cache keys; change it whenever the layout changes.
pub const STORED_FORM: &str = ".2";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarballRef {
    pub url: String,
    pub version: String,
    #[serde(default)]
    pub integrity: Option<String>,
    #[serde(default)]
    pub shasum: Option<String>,
}

impl TarballRef {
    /// The digests to verify on ingest: `dist.integrity` (sha512, or sha1 for old
    /// packages) and `dist.shasum` (sha1).
    pub fn expected(&self) -> Expected {
        let mut e = Expected::default();
        if let Some(integrity) = &self.integrity {
            // Several space-separated hashes may be listed; take the ones we verify.
            for part in integrity.split_whitespace() {
                if let Some((alg, b64)) = part.split_once('-') {
                    let b64 = b64.split('?').next().unwrap_or("");
                    if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64) {
                        match alg {
                            "sha512" if raw.len() == 64 => e.sha512 = Some(hex::encode(raw)),
                            "sha256" if raw.len() == 32 => e.sha256 = Some(hex::encode(raw)),
                            "sha1" if raw.len() == 20 => e.sha1 = Some(hex::encode(raw)),
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Some(s) = self
            .shasum
            .as_ref()
            .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            e.sha1 = Some(s.to_ascii_lowercase());
        }
        e
    }
}

fn last_segment(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let seg = u.path_segments()?.next_back()?.to_string();
    Some(
        url::form_urlencoded::parse(format!("x={}", seg.replace('+', "%2B")).as_bytes())
            .next()?
            .1
            .into_owned(),
    )
}

type RawMap<'a> = BTreeMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>;

/// `{"k":v,…}` from already-serialised values (keys escaped here), appended to `out`.
fn write_object_into<'a>(out: &mut String, entries: impl IntoIterator<Item = (&'a str, &'a str)>) {
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| "\"\"".into()));
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
}

fn write_object<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    capacity: usize,
) -> String {
    let mut out = String::with_capacity(capacity);
    write_object_into(&mut out, entries);
    out
}

/// Deepest nesting accepted in a packument (serde_json's own limit for trees; raw
/// values are skipped without one, and clients parse the document whole).
const MAX_DEPTH: usize = 128;

/// Refuses JSON nested deeper than `max` (one pass over the bytes, strings skipped).
fn check_depth(json: &[u8], max: usize) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(format!(
                        "upstream packument is nested deeper than {max} levels"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses an upstream packument for `name` and rewrites every `dist.tarball` to
/// `{BASE}{prefix}/{name}/-/{file}`. Returns the stored form.
///
/// No tree of the document is built: the top level, `versions`, each manifest and its
/// `dist` are read as maps of borrowed raw JSON, and the output is written from those
/// slices — the work takes about the document's size again, not a multiple of it.
pub fn parse(body: &[u8], name: &PackageName, prefix: &str) -> Result<String, String> {
    let text =
        std::str::from_utf8(body).map_err(|e| format!("upstream packument is not JSON: {e}"))?;
    if !text.trim_start().starts_with('{') {
        return Err(
            if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                "upstream packument is not a JSON object".into()
            } else {
                "upstream packument is not JSON".into()
            },
        );
    }
    check_depth(text.as_bytes(), MAX_DEPTH)?;
    let top: RawMap<'_> =
        serde_json::from_str(text).map_err(|e| format!("upstream packument is not JSON: {e}"))?;
    match top
        .get("name")
        .and_then(|n| serde_json::from_str::<String>(n.get()).ok())
    {
        Some(n) if n == name.full() => {}
        Some(other) => {
            return Err(format!(
                "upstream answered for {other:?} instead of {:?}",
                name.full()
            ))
        }
        None => return Err("upstream packument has no name".into()),
    }
    // One buffer for the stored form: the document, then the tarball trailer line.
    let mut stored = String::with_capacity(text.len() + text.len() / 8 + 1024);
    let mut tarballs = BTreeMap::new();
    stored.push('{');
    for (i, (k, v)) in top.iter().enumerate() {
        if i > 0 {
            stored.push(',');
        }
        stored.push_str(&serde_json::to_string(k.as_ref()).map_err(|e| e.to_string())?);
        stored.push(':');
        match serde_json::from_str::<RawMap<'_>>(v.get()) {
            Ok(versions) if k.as_ref() == "versions" => {
                stored.push('{');
                for (j, (version, manifest_raw)) in versions.iter().enumerate() {
                    if j > 0 {
                        stored.push(',');
                    }
                    stored.push_str(&serde_json::to_string(version).map_err(|e| e.to_string())?);
                    stored.push(':');
                    write_manifest(
                        &mut stored,
                        &mut tarballs,
                        name,
                        prefix,
                        version,
                        manifest_raw,
                    )?;
                }
                stored.push('}');
            }
            _ => stored.push_str(v.get()),
        }
    }
    stored.push('}');
    // The trailer: a JSON line without raw newlines, after the last one of the document.
    stored.push('\n');
    stored.push_str(&serde_json::to_string(&tarballs).map_err(|e| e.to_string())?);
    Ok(stored)
}

/// Writes one version's manifest with `dist.tarball` rewritten to Orchard (or dropped
/// when the file name cannot be served), recording the upstream reference.
fn write_manifest(
    out: &mut String,
    tarballs: &mut BTreeMap<String, TarballRef>,
    name: &PackageName,
    prefix: &str,
    version: &str,
    manifest_raw: &serde_json::value::RawValue,
) -> Result<(), String> {
    let Ok(manifest) = serde_json::from_str::<RawMap<'_>>(manifest_raw.get()) else {
        out.push_str(manifest_raw.get());
        return Ok(());
    };
    let dist = manifest
        .get("dist")
        .and_then(|d| serde_json::from_str::<RawMap<'_>>(d.get()).ok());
    let Some(dist) = dist else {
        out.push_str(manifest_raw.get());
        return Ok(());
    };
    let Some(url) = dist
        .get("tarball")
        .and_then(|t| serde_json::from_str::<String>(t.get()).ok())
    else {
        out.push_str(manifest_raw.get());
        return Ok(());
    };
    let string_of = |key: &str| {
        dist.get(key)
            .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    };
    let new_tarball = match last_segment(&url).filter(|f| is_valid_tarball(f)) {
        Some(file) => {
            let link = serde_json::to_string(&format!("{BASE}{prefix}/{}/-/{file}", name.full()))
                .map_err(|e| e.to_string())?;
            tarballs.insert(
                file,
                TarballRef {
                    url,
                    version: version.to_string(),
                    integrity: string_of("integrity"),
                    shasum: string_of("shasum"),
                },
            );
            Some(link)
        }
        None => None, // never advertise what cannot be served
    };
    let dist_json = write_object(
        dist.iter()
            .filter(|(k, _)| k.as_ref() != "tarball")
            .map(|(k, v)| (k.as_ref(), v.get()))
            .chain(new_tarball.as_deref().map(|t| ("tarball", t))),
        256,
    );
    write_object_into(
        out,
        manifest.iter().map(|(k, v)| {
            (
                k.as_ref(),
                if k.as_ref() == "dist" {
                    dist_json.as_str()
                } else {
                    v.get()
                },
            )
        }),
    );
    Ok(())
}

/// The parts of a stored packument: the tarball references (the last line) and the
/// packument JSON before it.
pub fn split(stored: &str) -> Result<(BTreeMap<String, TarballRef>, &str), String> {
    let (body, trailer) = stored
        .rsplit_once('\n')
        .ok_or("stored packument without its tarball line")?;
    let tarballs = serde_json::from_str(trailer).map_err(|e| e.to_string())?;
    Ok((tarballs, body))
}

/// The packument JSON of a stored packument, without reading its tarball line.
pub fn body_of(stored: &str) -> Result<&str, String> {
    stored
        .rsplit_once('\n')
        .map(|(body, _)| body)
        .ok_or_else(|| "stored packument without its tarball line".to_string())
}

/// The packument JSON of a stored packument with the client's base URL in place,
/// produced lazily in pieces of at most `SPLICE_CHUNK` bytes (plus one base) copied from
/// the stored bytes: a response holds one piece at a time, never a rendered copy.
pub struct Spliced {
    stored: bytes::Bytes,
    base: bytes::Bytes,
    /// Next byte of the stored body to copy, and the end of the body.
    at: usize,
    end: usize,
    /// The next placeholder at or after `at` (`end` when there is none).
    next_hit: usize,
    /// Length of the whole spliced body.
    pub len: usize,
}

pub const SPLICE_CHUNK: usize = 64 * 1024;

impl Spliced {
    pub fn new(stored: bytes::Bytes, base: &str) -> Result<Spliced, String> {
        let end = {
            let text = std::str::from_utf8(&stored).map_err(|e| e.to_string())?;
            body_of(text)?.len()
        };
        let hits = memchr::memmem::find_iter(&stored[..end], BASE.as_bytes()).count();
        let mut s = Spliced {
            base: bytes::Bytes::copy_from_slice(base.as_bytes()),
            len: end - hits * BASE.len() + hits * base.len(),
            at: 0,
            end,
            next_hit: 0,
            stored,
        };
        s.next_hit = s.find_from(0);
        Ok(s)
    }

    fn find_from(&self, at: usize) -> usize {
        memchr::memmem::find(&self.stored[at..self.end], BASE.as_bytes())
            .map_or(self.end, |rel| at + rel)
    }

    /// The next piece, or `None` at the end.
    pub fn next_chunk(&mut self) -> Option<bytes::Bytes> {
        if self.at >= self.end {
            return None;
        }
        let mut out = bytes::BytesMut::with_capacity(SPLICE_CHUNK + self.base.len());
        while out.len() < SPLICE_CHUNK && self.at < self.end {
            let take = (self.next_hit - self.at).min(SPLICE_CHUNK - out.len());
            out.extend_from_slice(&self.stored[self.at..self.at + take]);
            self.at += take;
            if self.at == self.next_hit && self.at < self.end {
                out.extend_from_slice(&self.base);
                self.at += BASE.len();
                self.next_hit = self.find_from(self.at);
            }
        }
        Some(out.freeze())
    }
}

/// Packuments up to this size are rendered whole (and the rendered copy may be cached
/// per digest and base: the hot path of every install); larger ones are never copied
/// whole but spliced from the stored bytes as the client reads.
pub const RENDERED_MAX_BYTES: usize = 1 << 20;

/// A stored packument ready to send with `base` in its tarball links.
pub enum Ready {
    /// Rendered whole (at most `RENDERED_MAX_BYTES` of body).
    Rendered(bytes::Bytes),
    /// Spliced as the client reads (`Spliced::next_chunk`).
    Spliced(Spliced),
}

/// Renders a small stored packument, or prepares a large one for splicing.
pub fn ready(stored: &crate::proxy::document::Text, base: &str) -> Result<Ready, String> {
    let body = body_of(stored)?;
    if body.len() <= RENDERED_MAX_BYTES {
        return Ok(Ready::Rendered(bytes::Bytes::from(render(body, base))));
    }
    Ok(Ready::Spliced(Spliced::new(stored.bytes(), base)?))
}

/// The packument JSON with the client's base URL in place.
pub fn render(stored_body: &str, base: &str) -> String {
    stored_body.replace(BASE, base)
}

/// What `version` reads of a stored packument: the dist-tags and each version's
/// manifest as a borrowed slice of the stored text — no tree of the whole document is
/// built (a 16 MB packument used to take ~14× its size per request).
#[derive(Deserialize)]
struct Skim<'a> {
    #[serde(default, rename = "dist-tags")]
    dist_tags: BTreeMap<String, serde_json::Value>,
    #[serde(default, borrow)]
    versions: BTreeMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>,
}

/// One version's manifest (by version or dist-tag), rendered.
pub fn version(stored_body: &str, wanted: &str, base: &str) -> Result<Option<String>, String> {
    let doc: Skim<'_> = serde_json::from_str(stored_body).map_err(|e| e.to_string())?;
    let resolved = if doc.versions.contains_key(wanted) {
        wanted.to_string()
    } else {
        match doc.dist_tags.get(wanted).and_then(|v| v.as_str()) {
            Some(v) => v.to_string(),
            None => return Ok(None),
        }
    };
    Ok(doc
        .versions
        .get(resolved.as_str())
        .map(|m| render(m.get(), base)))
}

/// Every version's manifest and every dist-tag's, rendered, in one skim of the stored
/// packument: `(version or tag, manifest)`.
pub fn all_versions(stored_body: &str, base: &str) -> Result<Vec<(String, String)>, String> {
    let doc: Skim<'_> = serde_json::from_str(stored_body).map_err(|e| e.to_string())?;
    let mut out: Vec<(String, String)> = doc
        .versions
        .iter()
        .map(|(v, m)| (v.to_string(), render(m.get(), base)))
        .collect();
    for (tag, v) in &doc.dist_tags {
        if let Some(m) = v.as_str().and_then(|v| doc.versions.get(v)) {
            if !doc.versions.contains_key(tag.as_str()) {
                out.push((tag.clone(), render(m.get(), base)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"name":"@acme/tool","dist-tags":{"latest":"1.1.0"},"versions":{
      "1.0.0":{"name":"@acme/tool","version":"1.0.0","dist":{"tarball":"https://upstream.example/@acme/tool/-/tool-1.0.0.tgz","shasum":"aa","integrity":"sha512-AAAA"}},
      "1.1.0":{"name":"@acme/tool","version":"1.1.0","dist":{"tarball":"https://upstream.example/@acme%2ftool/-/tool-1.1.0.tgz","integrity":"sha512-q83vEjkqsdFiKnRtnBNoqeDhBnqglp0U6vNhDUhqJsuJgkXLuRIHxEGsS/pw+Nf1Fv5O5dCPyxyb5tE9NR/2Rg=="}},
      "2.0.0":{"name":"@acme/tool","version":"2.0.0","dist":{"tarball":"https://upstream.example/evil/../../x"}}}}"#;

    #[test]
    fn rewrites_tarballs_and_keeps_integrity() {
        let name = PackageName::parse("@acme/tool").unwrap();
        let stored = parse(DOC.as_bytes(), &name, "/sources/up").unwrap();
        let (tarballs, body) = split(&stored).unwrap();
        assert_eq!(tarballs.len(), 2, "the unservable tarball is dropped");
        assert_eq!(
            tarballs["tool-1.1.0.tgz"].url,
            "https://upstream.example/@acme%2ftool/-/tool-1.1.0.tgz"
        );
        let rendered = render(body, "http://orchard.local:8080");
        assert!(
            rendered.contains(
                r#""tarball":"http://orchard.local:8080/sources/up/@acme/tool/-/tool-1.0.0.tgz""#
            ),
            "{rendered}"
        );
        assert!(
            !rendered.contains("upstream.example"),
            "no upstream URL leaks"
        );
        assert!(
            rendered.contains(r#""integrity":"sha512-AAAA""#)
                && rendered.contains(r#""shasum":"aa""#)
        );
        let v: serde_json::Value =
            serde_json::from_str(&version(body, "latest", "http://b").unwrap().unwrap()).unwrap();
        assert_eq!(v["version"], "1.1.0");
        assert_eq!(
            v["dist"]["tarball"],
            "http://b/sources/up/@acme/tool/-/tool-1.1.0.tgz"
        );
        assert!(version(body, "9.9.9", "http://b").unwrap().is_none());
        let all: BTreeMap<String, String> = all_versions(body, "http://b")
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["1.0.0", "1.1.0", "2.0.0", "latest"]
        );
        assert_eq!(all["latest"], all["1.1.0"]);
        assert_eq!(
            all["1.1.0"],
            version(body, "1.1.0", "http://b").unwrap().unwrap()
        );
        let mut s = Spliced::new(
            bytes::Bytes::from(stored.clone()),
            "http://orchard.local:8080",
        )
        .unwrap();
        let total = s.len;
        let mut spliced = Vec::new();
        while let Some(c) = s.next_chunk() {
            spliced.extend_from_slice(&c);
        }
        assert_eq!(spliced.len(), total);
        assert_eq!(
            String::from_utf8(spliced).unwrap(),
            rendered,
            "the spliced body is the render"
        );
        let e = tarballs["tool-1.1.0.tgz"].expected();
        assert_eq!(e.sha512.as_deref().map(str::len), Some(128));
    }

    #[test]
    fn small_packuments_are_rendered_large_ones_spliced() {
        use crate::proxy::document::Text;
        let small = Text::from_string(format!("{{\"a\":\"{BASE}/x.tgz\"}}\n{{}}"));
        match ready(&small, "http://b").unwrap() {
            Ready::Rendered(b) => assert_eq!(&b[..], &b"{\"a\":\"http://b/x.tgz\"}"[..]),
            Ready::Spliced(_) => panic!("a small packument is rendered"),
        }
        let body = format!("{{\"a\":\"{}{BASE}\"}}", "x".repeat(RENDERED_MAX_BYTES));
        let large = Text::from_string(format!("{body}\n{{}}"));
        match ready(&large, "http://b").unwrap() {
            Ready::Spliced(s) => assert_eq!(s.len, render(&body, "http://b").len()),
            Ready::Rendered(_) => panic!("a large packument is spliced"),
        }
    }

    #[test]
    fn splicing_in_pieces_equals_the_render() {
        // placeholders across piece boundaries, long runs without one, one at the very end
        let mut body = String::new();
        for i in 0..3000 {
            body.push_str(&"x".repeat(i * 7 % 90_000));
            body.push_str(BASE);
        }
        let stored = format!("{body}\n{{}}");
        for base in ["", "http://b", &"h".repeat(100)] {
            let mut s = Spliced::new(bytes::Bytes::from(stored.clone()), base).unwrap();
            let total = s.len;
            let mut out = Vec::new();
            while let Some(c) = s.next_chunk() {
                assert!(c.len() <= SPLICE_CHUNK + base.len() && !c.is_empty());
                out.extend_from_slice(&c);
            }
            assert_eq!(out.len(), total);
            assert!(out == render(&body, base).into_bytes(), "base {base:?}");
        }
    }

    #[test]
    fn nesting_is_bounded_and_strings_do_not_count() {
        let deep = format!("{}{}", "[".repeat(129), "]".repeat(129));
        assert!(check_depth(deep.as_bytes(), 128)
            .unwrap_err()
            .contains("deeper than 128"));
        let ok = format!("{}{}", "[".repeat(128), "]".repeat(128));
        check_depth(ok.as_bytes(), 128).unwrap();
        let in_strings = format!(
            r#"{{"a":"{}","b":"\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        check_depth(in_strings.as_bytes(), 128).unwrap();
    }

    #[test]
    fn refuses_a_packument_for_another_name() {
        let name = PackageName::parse("tool").unwrap();
        assert!(parse(DOC.as_bytes(), &name, "/npm")
            .unwrap_err()
            .contains("instead of"));
        assert!(parse(b"[1,2]", &name, "/npm").is_err());
        assert!(parse(b"{not json", &name, "/npm").is_err());
    }

    #[test]
    fn a_pretty_printed_packument_keeps_its_newlines_and_the_trailer_is_found() {
        let name = PackageName::parse("@acme/tool").unwrap();
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(DOC).unwrap())
                .unwrap();
        let stored = parse(pretty.as_bytes(), &name, "/npm").unwrap();
        let (tarballs, body) = split(&stored).unwrap();
        assert_eq!(tarballs.len(), 2);
        let v: serde_json::Value = serde_json::from_str(&render(body, "http://b")).unwrap();
        assert_eq!(
            v["versions"]["1.0.0"]["dist"]["tarball"],
            "http://b/npm/@acme/tool/-/tool-1.0.0.tgz"
        );
        assert!(body_of("no trailer").is_err());
    }
}
