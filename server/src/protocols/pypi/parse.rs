//! Parsing upstream simple-API documents: PEP 503 HTML and PEP 691 JSON.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{FileEntry, ProjectPage, RootIndex};
use super::names::normalize;

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("upstream document is not valid JSON for the simple API: {0}")]
    Json(#[from] serde_json::Error),
    #[error("upstream document is not parseable HTML")]
    Html,
    #[error("upstream document is not UTF-8")]
    Encoding,
}

pub fn is_json(content_type: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.ends_with("+json") || ct == "application/json"
}

fn split_fragment(href: &str) -> (&str, Option<&str>) {
    match href.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (href, None),
    }
}

/// What a `name=digest` hash field says.
#[derive(Debug, PartialEq, Eq)]
enum Hash {
    Valid(String, String),
    /// An algorithm Orchard does not know: ignored.
    Unknown,
    /// A known algorithm with a digest of the wrong length or not hex: the link is
    /// dropped (a declared hash that cannot be checked is never served as verified).
    Invalid,
}

/// `sha256=<64 hex>` → Valid("sha256", …), lower-cased; lengths checked per algorithm.
fn hash_field(s: &str) -> Hash {
    let Some((alg, digest)) = s.split_once('=') else {
        return Hash::Unknown;
    };
    let alg = alg.trim().to_ascii_lowercase();
    let digest = digest.trim().to_ascii_lowercase();
    let len = match alg.as_str() {
        "md5" => 32,
        "sha1" => 40,
        "sha224" => 56,
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Hash::Unknown,
    };
    if digest.len() == len && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Hash::Valid(alg, digest)
    } else {
        Hash::Invalid
    }
}

/// The valid hashes of a set of fields, or None when one is invalid.
fn hashes_of(fields: impl IntoIterator<Item = String>) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in fields {
        match hash_field(&f) {
            Hash::Valid(a, d) => {
                out.insert(a, d);
            }
            Hash::Unknown => {}
            Hash::Invalid => return None,
        }
    }
    Some(out)
}

fn resolve(base: &url::Url, href: &str) -> Option<String> {
    let mut u = base.join(href).ok()?;
    u.set_fragment(None);
    matches!(u.scheme(), "http" | "https").then(|| u.to_string())
}

fn file_name_from_url(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
        })
        .map(|s| percent_decode(&s))
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// A PEP 503 project page.
pub fn parse_project_html(
    body: &[u8],
    base: &url::Url,
    project: &str,
) -> Result<ProjectPage, ParseError> {
    let text = std::str::from_utf8(body).map_err(|_| ParseError::Encoding)?;
    let dom = tl::parse(text, tl::ParserOptions::default()).map_err(|_| ParseError::Html)?;
    let parser = dom.parser();
    let mut files = Vec::new();
    for handle in dom.query_selector("a").into_iter().flatten() {
        let Some(tag) = handle.get(parser).and_then(|n| n.as_tag()) else {
            continue;
        };
        let attrs = tag.attributes();
        let attr = |name: &str| -> Option<String> {
            attrs.get(name).map(|v| {
                v.map(|b| html_escape::decode_html_entities(&b.as_utf8_str()).into_owned())
                    .unwrap_or_default()
            })
        };
        let Some(href) = attr("href") else { continue };
        let (target, fragment) = split_fragment(&href);
        let Some(url) = resolve(base, target) else {
            continue;
        };
        let text = html_escape::decode_html_entities(&tag.inner_text(parser))
            .trim()
            .to_string();
        let filename = if text.is_empty() {
            file_name_from_url(&url)
        } else {
            text
        };
        let Some(hashes) = hashes_of(fragment.map(str::to_string)) else {
            continue;
        };
        let core_metadata = attr("data-core-metadata")
            .or_else(|| attr("data-dist-info-metadata"))
            .and_then(|v| {
                if v.eq_ignore_ascii_case("false") {
                    None
                } else if v.eq_ignore_ascii_case("true") {
                    Some(BTreeMap::new())
                } else {
                    hashes_of([v]) // an invalid metadata hash: no metadata offered
                }
            });
        files.push(FileEntry {
            filename,
            url,
            hashes,
            requires_python: attr("data-requires-python").filter(|v| !v.is_empty()),
            yanked: attr("data-yanked"),
            core_metadata,
            size: None,
            upload_time: None,
        });
    }
    Ok(ProjectPage {
        name: project.to_string(),
        files,
        versions: Vec::new(),
    })
}

#[derive(Deserialize)]
struct JsonPage {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    files: Vec<JsonFile>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrHashes {
    Bool(bool),
    Hashes(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrString {
    Bool(bool),
    Reason(String),
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
    #[serde(default, rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    yanked: Option<BoolOrString>,
    #[serde(default, rename = "core-metadata")]
    core_metadata: Option<BoolOrHashes>,
    #[serde(default, rename = "dist-info-metadata")]
    dist_info_metadata: Option<BoolOrHashes>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "upload-time")]
    upload_time: Option<String>,
}

/// A PEP 691 project page.
pub fn parse_project_json(
    body: &[u8],
    base: &url::Url,
    project: &str,
) -> Result<ProjectPage, ParseError> {
    let page: JsonPage = serde_json::from_slice(body)?;
    let files = page
        .files
        .into_iter()
        .filter_map(|f| {
            let url = resolve(base, split_fragment(&f.url).0)?;
            let hashes = hashes_of(f.hashes.into_iter().map(|(k, v)| format!("{k}={v}")))?;
            let core_metadata = match f.core_metadata.or(f.dist_info_metadata) {
                None | Some(BoolOrHashes::Bool(false)) => None,
                Some(BoolOrHashes::Bool(true)) => Some(BTreeMap::new()),
                Some(BoolOrHashes::Hashes(h)) => {
                    hashes_of(h.into_iter().map(|(k, v)| format!("{k}={v}")))
                }
            };
            let yanked = match f.yanked {
                None | Some(BoolOrString::Bool(false)) => None,
                Some(BoolOrString::Bool(true)) => Some(String::new()),
                Some(BoolOrString::Reason(r)) => Some(r),
            };
            Some(FileEntry {
                filename: f.filename,
                url,
                hashes,
                requires_python: f.requires_python.filter(|v| !v.is_empty()),
                yanked,
                core_metadata,
                size: f.size,
                upload_time: f.upload_time,
            })
        })
        .collect();
    Ok(ProjectPage {
        name: page.name.unwrap_or_else(|| project.to_string()),
        files,
        versions: page.versions,
    })
}

pub fn parse_project(
    body: &[u8],
    content_type: &str,
    base: &url::Url,
    project: &str,
) -> Result<ProjectPage, ParseError> {
    if is_json(content_type) {
        parse_project_json(body, base, project)
    } else {
        parse_project_html(body, base, project)
    }
}

/// The root index (`/simple/`), in either form.
pub fn parse_root(body: &[u8], content_type: &str) -> Result<RootIndex, ParseError> {
    let mut projects: Vec<String> = if is_json(content_type) {
        #[derive(Deserialize)]
        struct P {
            name: String,
        }
        #[derive(Deserialize)]
        struct R {
            #[serde(default)]
            projects: Vec<P>,
        }
        let r: R = serde_json::from_slice(body)?;
        r.projects.into_iter().map(|p| p.name).collect()
    } else {
        let text = std::str::from_utf8(body).map_err(|_| ParseError::Encoding)?;
        let dom = tl::parse(text, tl::ParserOptions::default()).map_err(|_| ParseError::Html)?;
        let parser = dom.parser();
        dom.query_selector("a")
            .into_iter()
            .flatten()
            .filter_map(|h| h.get(parser))
            .map(|n| {
                html_escape::decode_html_entities(&n.inner_text(parser))
                    .trim()
                    .to_string()
            })
            .filter(|t| super::names::is_valid_project_name(t))
            .collect()
    };
    projects.sort_by_key(|p| normalize(p));
    projects.dedup_by_key(|p| normalize(p));
    Ok(RootIndex { projects })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> url::Url {
        url::Url::parse("https://upstream.example/simple/demo/").unwrap()
    }

    #[test]
    fn html_page_with_every_attribute() {
        let html = r#"<!DOCTYPE html><html><body>
<a href="../../packages/demo-1.0.tar.gz#sha256=AABBAABBAABBAABBAABBAABBAABBAABBAABBAABBAABBAABBAABBAABBAABBAABB" data-requires-python="&gt;=3.8,&lt;4">demo-1.0.tar.gz</a><br/>
<a href="https://files.upstream.example/demo-2.0-py3-none-any.whl#md5=0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f" data-yanked="broken &amp; bad" data-core-metadata="sha256=cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc">demo-2.0-py3-none-any.whl</a>
<a href="/x/demo-3.0-py3-none-any.whl" data-dist-info-metadata="true" data-yanked="">demo-3.0-py3-none-any.whl</a>
<a href="javascript:alert(1)">evil.whl</a>
</body></html>"#;
        let page = parse_project_html(html.as_bytes(), &base(), "demo").unwrap();
        assert_eq!(page.files.len(), 3, "non-http links are dropped");
        let f = &page.files[0];
        assert_eq!(f.url, "https://upstream.example/packages/demo-1.0.tar.gz");
        assert_eq!(
            f.sha256(),
            Some("aabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabb")
        );
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8,<4"));
        assert_eq!(f.yanked, None);
        assert_eq!(f.core_metadata, None);
        let f = &page.files[1];
        assert_eq!(
            f.hashes.get("md5").map(String::as_str),
            Some("0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f")
        );
        assert_eq!(f.yanked.as_deref(), Some("broken & bad"));
        assert_eq!(
            f.core_metadata
                .as_ref()
                .unwrap()
                .get("sha256")
                .map(String::as_str),
            Some("cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc")
        );
        let f = &page.files[2];
        assert_eq!(
            f.url,
            "https://upstream.example/x/demo-3.0-py3-none-any.whl"
        );
        assert_eq!(f.yanked.as_deref(), Some(""));
        assert_eq!(f.core_metadata, Some(BTreeMap::new()));
    }

    #[test]
    fn json_page() {
        let json = r#"{"meta":{"api-version":"1.1"},"name":"demo","versions":["1.0","2.0"],"files":[
 {"filename":"demo-1.0.tar.gz","url":"../../packages/demo-1.0.tar.gz","hashes":{"sha256":"aabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabb"},"requires-python":">=3.8","size":10,"upload-time":"2024-01-01T00:00:00Z"},
 {"filename":"demo-2.0-py3-none-any.whl","url":"https://files.upstream.example/demo-2.0-py3-none-any.whl","hashes":{},"yanked":"reason","core-metadata":{"sha256":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}},
 {"filename":"demo-3.0-py3-none-any.whl","url":"https://files.upstream.example/demo-3.0-py3-none-any.whl","hashes":{},"yanked":true,"dist-info-metadata":true}
]}"#;
        let page = parse_project_json(json.as_bytes(), &base(), "demo").unwrap();
        assert_eq!(page.versions, ["1.0", "2.0"]);
        assert_eq!(
            page.files[0].url,
            "https://upstream.example/packages/demo-1.0.tar.gz"
        );
        assert_eq!(page.files[0].size, Some(10));
        assert_eq!(
            page.files[0].upload_time.as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(page.files[1].yanked.as_deref(), Some("reason"));
        assert_eq!(page.files[2].yanked.as_deref(), Some(""));
        assert_eq!(page.files[2].core_metadata, Some(BTreeMap::new()));
        assert!(parse_project_json(b"{not json", &base(), "demo").is_err());
    }

    #[test]
    fn a_link_whose_declared_hash_cannot_be_checked_is_dropped() {
        let good = "ab".repeat(32);
        let html = format!(
            r#"<a href="/p/demo-1.0.tar.gz#sha256=abcd">demo-1.0.tar.gz</a>
<a href="/p/demo-1.1.tar.gz#sha256={good}x">demo-1.1.tar.gz</a>
<a href="/p/demo-1.2.tar.gz#sha256={good}">demo-1.2.tar.gz</a>
<a href="/p/demo-1.3.tar.gz#blake2b=abcd">demo-1.3.tar.gz</a>
<a href="/p/demo-1.4-py3-none-any.whl#sha256={good}" data-core-metadata="sha256=12">demo-1.4-py3-none-any.whl</a>"#
        );
        let page = parse_project_html(html.as_bytes(), &base(), "demo").unwrap();
        let names: Vec<&str> = page.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-1.2.tar.gz",
                "demo-1.3.tar.gz",
                "demo-1.4-py3-none-any.whl"
            ]
        );
        assert!(
            page.files[1].hashes.is_empty(),
            "an unknown algorithm is ignored"
        );
        assert_eq!(
            page.files[2].core_metadata, None,
            "metadata with a bad hash is not offered"
        );
        let json = format!(
            r#"{{"files":[{{"filename":"a.tar.gz","url":"a.tar.gz","hashes":{{"sha256":"ab"}}}},
 {{"filename":"b.tar.gz","url":"b.tar.gz","hashes":{{"sha256":"{good}"}}}}]}}"#
        );
        let page = parse_project_json(json.as_bytes(), &base(), "demo").unwrap();
        assert_eq!(page.files.len(), 1);
        assert_eq!(page.files[0].filename, "b.tar.gz");
    }

    #[test]
    fn root_index() {
        let html = r#"<html><body><a href="six/">six</a><a href="Zope.Interface/">Zope.Interface</a><a href="x">../etc</a></body></html>"#;
        let r = parse_root(html.as_bytes(), "text/html").unwrap();
        assert_eq!(r.projects, ["six", "Zope.Interface"]);
        let r = parse_root(
            br#"{"meta":{"api-version":"1.0"},"projects":[{"name":"a"},{"name":"b"}]}"#,
            "application/vnd.pypi.simple.v1+json",
        )
        .unwrap();
        assert_eq!(r.projects, ["a", "b"]);
    }
}
