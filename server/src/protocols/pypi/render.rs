//! Rendering project pages and the root index as PEP 503 HTML or PEP 691 JSON, with
//! links that point at Orchard.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::model::FileEntry;
use super::names::{normalize, version_of_filename};

/// One file as the client sees it.
pub struct Link<'a> {
    pub file: &'a FileEntry,
    /// Orchard URL of the file, relative to the page.
    pub href: String,
    /// Hashes of the `.metadata` file Orchard can serve; `None` = advertise nothing.
    pub metadata: Option<BTreeMap<String, String>>,
}

fn esc(s: &str) -> String {
    html_escape::encode_double_quoted_attribute(s).into_owned()
}

fn text(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn hash_attr(hashes: &BTreeMap<String, String>) -> String {
    match hashes
        .get("sha256")
        .map(|h| ("sha256", h))
        .or_else(|| hashes.iter().next().map(|(k, v)| (k.as_str(), v)))
    {
        Some((k, v)) => format!("{k}={v}"),
        None => "true".to_string(),
    }
}

pub fn project_html(name: &str, links: &[Link<'_>]) -> String {
    let mut out = String::with_capacity(256 + links.len() * 200);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.1\">\n<title>Links for {0}</title>\n</head>\n<body>\n<h1>Links for {0}</h1>\n",
        text(name)
    );
    for l in links {
        let f = l.file;
        let mut href = l.href.clone();
        if let Some((alg, digest)) = f
            .hashes
            .get("sha256")
            .map(|h| ("sha256", h))
            .or_else(|| f.hashes.iter().next().map(|(k, v)| (k.as_str(), v)))
        {
            let _ = write!(href, "#{alg}={digest}");
        }
        let _ = write!(out, "<a href=\"{}\"", esc(&href));
        if let Some(rp) = &f.requires_python {
            let _ = write!(out, " data-requires-python=\"{}\"", esc(rp));
        }
        if let Some(reason) = &f.yanked {
            let _ = write!(out, " data-yanked=\"{}\"", esc(reason));
        }
        if let Some(m) = &l.metadata {
            let v = esc(&hash_attr(m));
            let _ = write!(
                out,
                " data-core-metadata=\"{v}\" data-dist-info-metadata=\"{v}\""
            );
        }
        let _ = writeln!(out, ">{}</a><br/>", text(&f.filename));
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn versions_of(links: &[Link<'_>], listed: &[String]) -> Vec<String> {
    if !listed.is_empty() {
        return listed.to_vec();
    }
    let mut seen = std::collections::BTreeSet::new();
    links
        .iter()
        .filter_map(|l| version_of_filename(&l.file.filename))
        .filter(|v| seen.insert(v.clone()))
        .collect()
}

pub fn project_json(name: &str, links: &[Link<'_>], listed_versions: &[String]) -> Vec<u8> {
    let all_sizes = links.iter().all(|l| l.file.size.is_some());
    let files: Vec<serde_json::Value> = links
        .iter()
        .map(|l| {
            let f = l.file;
            let mut o = serde_json::Map::new();
            o.insert("filename".into(), f.filename.clone().into());
            o.insert("url".into(), l.href.clone().into());
            o.insert(
                "hashes".into(),
                serde_json::to_value(&f.hashes).unwrap_or_default(),
            );
            if let Some(rp) = &f.requires_python {
                o.insert("requires-python".into(), rp.clone().into());
            }
            match &f.yanked {
                None => o.insert("yanked".into(), false.into()),
                Some(r) if r.is_empty() => o.insert("yanked".into(), true.into()),
                Some(r) => o.insert("yanked".into(), r.clone().into()),
            };
            if let Some(m) = &l.metadata {
                let v = if m.is_empty() {
                    serde_json::Value::Bool(true)
                } else {
                    serde_json::to_value(m).unwrap_or_default()
                };
                o.insert("core-metadata".into(), v.clone());
                o.insert("dist-info-metadata".into(), v);
            }
            if let Some(s) = f.size {
                o.insert("size".into(), s.into());
            }
            if let Some(t) = &f.upload_time {
                o.insert("upload-time".into(), t.clone().into());
            }
            serde_json::Value::Object(o)
        })
        .collect();
    let mut doc = serde_json::json!({
        "meta": {"api-version": if all_sizes { "1.1" } else { "1.0" }},
        "name": normalize(name),
        "files": files,
    });
    if all_sizes {
        doc["versions"] =
            serde_json::to_value(versions_of(links, listed_versions)).unwrap_or_default();
    }
    serde_json::to_vec(&doc).unwrap_or_default()
}

pub fn root_html(projects: &[String]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"1.1\">\n<title>Simple index</title>\n</head>\n<body>\n",
    );
    for p in projects {
        let n = normalize(p);
        let _ = writeln!(out, "<a href=\"{}/\">{}</a><br/>", esc(&n), text(p));
    }
    out.push_str("</body>\n</html>\n");
    out
}

pub fn root_json(projects: &[String]) -> Vec<u8> {
    let projects: Vec<_> = projects
        .iter()
        .map(|p| serde_json::json!({"name": p}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"meta": {"api-version": "1.1"}, "projects": projects}))
        .unwrap_or_default()
}

/// The merged root index of several sources' stored roots (by priority): every project
/// a source serves (its include/exclude), once by normalised name, spelled as the first
/// source that lists it spells it; JSON or HTML.
pub fn merged_root(
    sources: &[(
        std::sync::Arc<crate::sources::Source>,
        crate::proxy::document::Text,
    )],
    json: bool,
) -> Result<bytes::Bytes, String> {
    let mut names: std::collections::BTreeMap<String, String> = Default::default();
    for (source, body) in sources {
        let root: super::model::RootIndex =
            serde_json::from_str(body).map_err(|e| e.to_string())?;
        for p in root.projects {
            let n = super::names::normalize(&p);
            if super::names::source_serves(source, &n) {
                names.entry(n).or_insert(p);
            }
        }
    }
    let projects: Vec<String> = names.into_values().collect();
    Ok(if json {
        root_json(&projects).into()
    } else {
        root_html(&projects).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> FileEntry {
        FileEntry {
            filename: "demo-1.0-py3-none-any.whl".into(),
            url: "https://upstream.example/demo-1.0-py3-none-any.whl".into(),
            hashes: [(
                "sha256".to_string(),
                "aabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabb".to_string(),
            )]
            .into(),
            requires_python: Some(">=3.8,<4\"".into()),
            yanked: Some("bad <release>".into()),
            core_metadata: None,
            size: Some(42),
            upload_time: None,
        }
    }

    #[test]
    fn html_escapes_and_keeps_fragments() {
        let e = entry();
        let links = [Link {
            file: &e,
            href: "../../files/demo/demo-1.0-py3-none-any.whl".into(),
            metadata: Some(
                [(
                    "sha256".to_string(),
                    "ccddccddccddccddccddccddccddccddccddccddccddccddccddccddccddccdd".to_string(),
                )]
                .into(),
            ),
        }];
        let html = project_html("demo", &links);
        assert!(html.contains(r#"href="../../files/demo/demo-1.0-py3-none-any.whl#sha256=aabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabbaabb""#), "{html}");
        assert!(
            html.contains(r#"data-requires-python="&gt;=3.8,&lt;4&quot;""#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-yanked="bad &lt;release&gt;""#),
            "{html}"
        );
        assert!(html.contains(r#"data-core-metadata="sha256=ccddccddccddccddccddccddccddccddccddccddccddccddccddccddccddccdd""#), "{html}");
        assert!(
            !html.contains("upstream.example"),
            "no upstream URL leaks into the page"
        );
        // Round trip through the parser.
        let base = url::Url::parse("http://orchard.local/pypi/simple/demo/").unwrap();
        let back = super::super::parse::parse_project_html(html.as_bytes(), &base, "demo").unwrap();
        assert_eq!(back.files[0].requires_python, e.requires_python);
        assert_eq!(back.files[0].yanked, e.yanked);
    }

    #[test]
    fn json_has_pep700_fields() {
        let e = entry();
        let links = [Link {
            file: &e,
            href: "x.whl".into(),
            metadata: None,
        }];
        let v: serde_json::Value =
            serde_json::from_slice(&project_json("Demo", &links, &[])).unwrap();
        assert_eq!(v["meta"]["api-version"], "1.1");
        assert_eq!(v["name"], "demo");
        assert_eq!(v["versions"], serde_json::json!(["1.0"]));
        assert_eq!(v["files"][0]["size"], 42);
        assert_eq!(v["files"][0]["yanked"], "bad <release>");
        assert!(v["files"][0].get("core-metadata").is_none());
        let mut no_size = entry();
        no_size.size = None;
        let links = [Link {
            file: &no_size,
            href: "x.whl".into(),
            metadata: None,
        }];
        let v: serde_json::Value =
            serde_json::from_slice(&project_json("demo", &links, &[])).unwrap();
        assert_eq!(
            v["meta"]["api-version"], "1.0",
            "without sizes the page cannot claim PEP 700"
        );
    }

    #[test]
    fn merged_root_follows_priority_and_patterns() {
        use crate::sources::{Protocol, Source, SourceSettings, SourceSpec};
        let source = |name: &str, include: &[&str]| {
            let mut settings =
                SourceSettings::new(Protocol::Pypi, format!("https://upstream.example/{name}/"));
            settings.include = include.iter().map(|s| s.to_string()).collect();
            let spec = SourceSpec {
                name: name.into(),
                settings,
                credentials: None,
            };
            std::sync::Arc::new(Source {
                base: url::Url::parse(&spec.url).unwrap(),
                spec,
            })
        };
        let text = |projects: &[&str]| {
            crate::proxy::document::Text::from_string(
                serde_json::json!({ "projects": projects }).to_string(),
            )
        };
        let inputs = vec![
            (
                source("internal", &["acme-*"]),
                text(&["Acme_Tools", "requests"]),
            ),
            (
                source("public", &[]),
                text(&["acme-tools", "requests", "six"]),
            ),
        ];
        let json: serde_json::Value =
            serde_json::from_slice(&merged_root(&inputs, true).unwrap()).unwrap();
        let names: Vec<&str> = json["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        // the first source's spelling wins; `requests` is outside its include list
        assert_eq!(names, ["Acme_Tools", "requests", "six"]);
        assert!(merged_root(&[(source("x", &[]), text(&[]))], false).is_ok());
    }
}
