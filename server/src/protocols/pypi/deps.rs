//! PyPI: `Requires-Dist` of a wheel's METADATA (or an sdist's PKG-INFO when its
//! metadata version is 2.2+ and `Requires-Dist` is not dynamic), parsed as PEP 508
//! requirements with `pep508_rs`. Extras become kind `extra:{name}` (optional), other
//! requirements kind `runtime`; the environment marker is kept as written (normalised).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use pep508_rs::pep440_rs::{Version, VersionSpecifiers};
use pep508_rs::{Requirement, VerbatimUrl};

use futures::future::LocalBoxFuture;

use crate::deps::ensure::{Entry, Planned};
use crate::deps::resolve::{Candidate, Environment};
use crate::deps::universe::ServerUniverse;
use crate::deps::{dep, Extracted};
use crate::protocols::pypi::names::version_of_filename;
use crate::sources::Protocol;

const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// Core-metadata headers, in order (continuation lines folded; the body after the
/// first blank line is the description and is ignored).
pub fn headers(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub use crate::protocols::pypi::names::normalize;

/// Dependencies from METADATA/PKG-INFO text. `sdist` applies the 2.2+/Dynamic rule.
pub fn from_metadata(text: &str, sdist: bool) -> Result<Extracted, String> {
    let h = headers(text);
    let name = header(&h, "Name").ok_or("metadata has no Name")?;
    let version = header(&h, "Version").ok_or("metadata has no Version")?;
    let version = Version::from_str(version)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| version.to_string());
    let mut extracted = Extracted {
        protocol: "pypi".into(),
        name: normalize(name),
        version,
        known: true,
        dependencies: vec![],
    };
    if sdist {
        let mv = header(&h, "Metadata-Version").unwrap_or("1.0");
        let (major, minor) = mv.split_once('.').unwrap_or((mv, "0"));
        let new_enough = (
            major.parse::<u32>().unwrap_or(0),
            minor.parse::<u32>().unwrap_or(0),
        ) >= (2, 2);
        let dynamic = h.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("Dynamic") && v.eq_ignore_ascii_case("Requires-Dist")
        });
        if !new_enough || dynamic {
            extracted.known = false;
            return Ok(extracted);
        }
    }
    for (k, v) in &h {
        if !k.eq_ignore_ascii_case("Requires-Dist") {
            continue;
        }
        let req = Requirement::<VerbatimUrl>::from_str(v)
            .map_err(|e| format!("Requires-Dist {v:?}: {e}"))?;
        let marker = req.marker.try_to_string().unwrap_or_default();
        let extra = extra_of(&marker);
        let mut requirement = req
            .version_or_url
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        if !req.extras.is_empty() {
            let extras: Vec<String> = req.extras.iter().map(|e| e.to_string()).collect();
            requirement = format!("[{}]{requirement}", extras.join(","));
        }
        let (kind, optional) = match extra {
            Some(x) => (format!("extra:{x}"), true),
            None => ("runtime".to_string(), false),
        };
        extracted.dependencies.push(dep(
            "pypi",
            &normalize(req.name.as_ref()),
            &requirement,
            &kind,
            optional,
            &marker,
        ));
    }
    Ok(extracted)
}

/// The extra a marker is conditioned on (`extra == 'socks'`), if any: the marker is
/// evaluated with each candidate extra name it mentions, and one is the extra if the
/// marker holds with it and not without it (so `extra == …` inside a string literal of
/// another variable does not count).
fn extra_of(marker: &str) -> Option<String> {
    use pep508_rs::{ExtraName, MarkerTree};
    let tree = MarkerTree::from_str(marker).ok()?;
    let mut rest = marker;
    while let Some(i) = rest.find("extra == ") {
        let after = &rest[i + "extra == ".len()..];
        let quote = after.chars().next()?;
        let body = &after[quote.len_utf8()..];
        let Some(end) = body.find(quote) else { break };
        let candidate = &body[..end];
        if let Ok(extra) = ExtraName::from_str(candidate) {
            let env = reference_environment();
            if tree.evaluate(&env, std::slice::from_ref(&extra)) && !tree.evaluate(&env, &[]) {
                return Some(candidate.to_string());
            }
        }
        rest = &body[end..];
    }
    None
}

/// Any valid environment: `extra_of` only compares evaluations with and without an extra.
fn reference_environment() -> pep508_rs::MarkerEnvironment {
    marker_environment(&crate::deps::resolve::Environment::default())
        .expect("a valid default environment")
}

/// Evaluates a PEP 508 marker for a target environment (`python_version`, `platform`
/// as `sys_platform`); `extra` is the extra the dependency belongs to, if any.
pub fn marker_applies(
    marker: &str,
    env: &crate::deps::resolve::Environment,
    extra: Option<&str>,
) -> Result<bool, String> {
    use pep508_rs::{ExtraName, MarkerTree};
    let tree = MarkerTree::from_str(marker).map_err(|e| format!("marker {marker:?}: {e}"))?;
    let environment = marker_environment(env)?;
    let extras: Vec<ExtraName> = extra
        .and_then(|x| ExtraName::from_str(x).ok())
        .into_iter()
        .collect();
    Ok(tree.evaluate(&environment, &extras))
}

fn marker_environment(
    env: &crate::deps::resolve::Environment,
) -> Result<pep508_rs::MarkerEnvironment, String> {
    use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder};
    let python = env
        .python_version
        .clone()
        .unwrap_or_else(|| "3.12".to_string());
    let full = if python.matches('.').count() >= 2 {
        python.clone()
    } else {
        format!("{python}.0")
    };
    let platform = env.platform.clone().unwrap_or_else(|| "linux".to_string());
    let (system, os_name) = match platform.as_str() {
        "darwin" => ("Darwin", "posix"),
        "win32" => ("Windows", "nt"),
        _ => ("Linux", "posix"),
    };
    let environment = MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
        implementation_name: "cpython",
        implementation_version: &full,
        os_name,
        platform_machine: "x86_64",
        platform_python_implementation: "CPython",
        platform_release: "",
        platform_system: system,
        platform_version: "",
        python_full_version: &full,
        python_version: &python,
        sys_platform: &platform,
    })
    .map_err(|e| format!("environment: {e}"))?;
    Ok(environment)
}

/// Splits `[a,b]>=1` into extras and the specifier.
pub fn split_requirement(requirement: &str) -> (Vec<String>, &str) {
    if let Some(rest) = requirement.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let extras = rest[..end]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            return (extras, &rest[end + 1..]);
        }
    }
    (vec![], requirement)
}

/// Extraction by file type: wheel METADATA, sdist PKG-INFO (`.tar.gz` or `.zip`).
pub fn extract_file(path: &Path, filename: &str) -> Result<Extracted, String> {
    if filename.ends_with(".whl") {
        let bytes = crate::protocols::pypi::metadata::extract_from_wheel(path)?;
        return from_metadata(&String::from_utf8_lossy(&bytes), false);
    }
    if filename.ends_with(".metadata") {
        let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
        if size > MAX_METADATA_BYTES {
            return Err(format!(
                "{filename} is too large ({size} bytes, limit {MAX_METADATA_BYTES})"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        return from_metadata(&text, false);
    }
    let pkg_info = if filename.ends_with(".tar.gz") || filename.ends_with(".tgz") {
        crate::deps::top_level_file_in_tgz(path, "PKG-INFO", MAX_METADATA_BYTES)?
    } else if filename.ends_with(".zip") {
        sdist_pkg_info_zip(path)?
    } else {
        return Err(format!("{filename}: not a wheel or an sdist"));
    };
    from_metadata(&pkg_info, true)
}

fn sdist_pkg_info_zip(path: &Path) -> Result<String, String> {
    crate::deps::archive::check_zip_directory(path)?;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a zip: {e}"))?;
    let name = zip
        .file_names()
        .find(|n| {
            let parts: Vec<&str> = n.split('/').collect();
            parts.len() == 2 && parts[1] == "PKG-INFO"
        })
        .map(str::to_string)
        .ok_or("the sdist has no top-level PKG-INFO")?;
    let entry = zip.by_name(&name).map_err(|e| e.to_string())?;
    let mut s = String::new();
    entry
        .take(MAX_METADATA_BYTES)
        .read_to_string(&mut s)
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// PyPI's dependency rules: PEP 440 specifiers (stable before pre-releases, yanked never,
/// `Requires-Python` against the environment), PEP 508 markers, normalised names.
pub struct Rules;

impl crate::protocols::DependencyRules for Rules {
    fn extractable(&self, filename: &str) -> bool {
        filename.ends_with(".whl")
            || filename.ends_with(".tar.gz")
            || filename.ends_with(".zip")
            || filename.ends_with(".whl.metadata")
    }

    fn extractor(&self) -> crate::protocols::Extractor {
        crate::protocols::Extractor::Archive(extract_file)
    }

    fn select(
        &self,
        requirement: &str,
        candidates: &[Candidate],
        env: &Environment,
    ) -> Result<Option<String>, String> {
        let (_, spec) = split_requirement(requirement);
        let spec = spec.trim();
        if spec.contains('@') || spec.contains("://") {
            return Err(format!("direct URL requirement {spec:?} is not resolved"));
        }
        let specs = VersionSpecifiers::from_str(spec)
            .map_err(|e| format!("bad specifier {spec:?}: {e}"))?;
        let python = env
            .python_version
            .as_deref()
            .and_then(|p| Version::from_str(p).ok());
        let mut ok: Vec<Version> = candidates
            .iter()
            .filter(|c| !c.yanked)
            .filter(|c| match (&python, &c.requires_python) {
                (Some(py), Some(rp)) => VersionSpecifiers::from_str(rp)
                    .map(|s| s.contains(py))
                    .unwrap_or(true),
                _ => true,
            })
            .filter_map(|c| Version::from_str(&c.version).ok())
            .filter(|v| specs.contains(v))
            .collect();
        ok.sort();
        let stable = ok.iter().rev().find(|v| !v.any_prerelease());
        Ok(stable.or(ok.last()).map(|v| v.to_string()))
    }

    fn applies(&self, d: &crate::db::NewDependency, env: &Environment) -> Result<bool, String> {
        if d.marker.is_empty() || (env.python_version.is_none() && env.platform.is_none()) {
            return Ok(true);
        }
        marker_applies(&d.marker, env, d.kind.strip_prefix("extra:"))
    }

    fn same_name(&self, a: &str, b: &str) -> bool {
        normalize(a) == normalize(b)
    }

    fn versions<'a>(
        &'a self,
        u: &'a ServerUniverse,
        name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Vec<Candidate>, String>> {
        Box::pin(async move {
            let Some(page) = u.pypi_page(name).await? else {
                return Ok(vec![]);
            };
            let mut by_version: HashMap<String, Candidate> = HashMap::new();
            for f in &page.files {
                let Some(v) = version_of_filename(&f.filename) else {
                    continue;
                };
                let c = by_version.entry(v.clone()).or_insert(Candidate {
                    version: v,
                    yanked: true,
                    requires_python: None,
                });
                c.yanked &= f.is_yanked();
                if c.requires_python.is_none() {
                    c.requires_python = f.requires_python.clone();
                }
            }
            Ok(by_version.into_values().collect())
        })
    }

    fn dependencies<'a>(
        &'a self,
        u: &'a ServerUniverse,
        name: &'a str,
        version: &'a str,
    ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>> {
        Box::pin(async move {
            let page = u
                .pypi_page(name)
                .await?
                .ok_or_else(|| format!("{name} not found"))?;
            let file = ServerUniverse::pick_file(&page.files, version)
                .ok_or_else(|| format!("{name} {version} has no wheel or sdist"))?;
            let path = u.pypi_file_path(name, &file.url)?;
            // PEP 658: a wheel's METADATA alone says what it needs — no need to
            // download the wheel (which can be gigabytes) to resolve through it.
            if file.offers_metadata() {
                let fetched = u.local.fetch(&format!("{path}.metadata")).await;
                if fetched.error.is_none() {
                    let e = u
                        .extraction(
                            Protocol::Pypi,
                            &format!("{}.metadata", file.filename),
                            &fetched.sha256,
                        )
                        .await?;
                    return Ok((e, u.cached_pypi_file(&path).await));
                }
            }
            let fetched = u.local.fetch(&path).await;
            if let Some(e) = fetched.error {
                return Err(e);
            }
            let e = u
                .extraction(Protocol::Pypi, &file.filename, &fetched.sha256)
                .await?;
            Ok((e, Some(fetched.sha256)))
        })
    }

    fn plan<'a>(
        &'a self,
        u: &'a ServerUniverse,
        e: &'a Entry,
        env: &'a Environment,
    ) -> LocalBoxFuture<'a, Result<Planned, String>> {
        Box::pin(async move {
            let page = u
                .pypi_page(&e.name)
                .await?
                .ok_or_else(|| format!("{} not found in any PyPI source", e.name))?;
            let version = crate::deps::ensure::version_of(u, e, env).await?;
            let files: Vec<(String, String)> = if e.hashes.is_empty() {
                let f = ServerUniverse::pick_file(&page.files, &version)
                    .ok_or_else(|| format!("{} {version} has no files", e.name))?;
                vec![(u.pypi_file_path(&e.name, &f.url)?, f.filename.clone())]
            } else {
                // pip's rule: the files whose digest is allowed.
                let wanted: Vec<String> = e
                    .hashes
                    .iter()
                    .filter_map(|h| h.strip_prefix("sha256:"))
                    .map(str::to_ascii_lowercase)
                    .collect();
                let mut out = Vec::new();
                for f in &page.files {
                    if f.hashes
                        .get("sha256")
                        .is_some_and(|h| wanted.contains(&h.to_ascii_lowercase()))
                    {
                        out.push((u.pypi_file_path(&e.name, &f.url)?, f.filename.clone()));
                    }
                }
                if out.is_empty() {
                    return Err(format!(
                        "no file of {} {version} has one of the given sha256 hashes",
                        e.name
                    ));
                }
                out
            };
            Ok((version, files))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUESTS: &str = "Metadata-Version: 2.1\nName: requests\nVersion: 2.32.3\nRequires-Python: >=3.8\n\
Requires-Dist: charset-normalizer<4,>=2\nRequires-Dist: idna<4,>=2.5\nRequires-Dist: urllib3<3,>=1.21.1\n\
Requires-Dist: certifi>=2017.4.17\nProvides-Extra: socks\n\
Requires-Dist: PySocks!=1.5.7,>=1.5.6; extra == \"socks\"\nProvides-Extra: use_chardet_on_py3\n\
Requires-Dist: chardet<6,>=3.0.2; extra == \"use-chardet-on-py3\"\n\nDescription body: Requires-Dist: nope\n";

    #[test]
    fn wheel_metadata_with_extras_and_markers() {
        let e = from_metadata(REQUESTS, false).unwrap();
        assert_eq!(
            (e.name.as_str(), e.version.as_str(), e.known),
            ("requests", "2.32.3", true)
        );
        let names: Vec<&str> = e.dependencies.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "charset-normalizer",
                "idna",
                "urllib3",
                "certifi",
                "pysocks",
                "chardet"
            ]
        );
        let socks = &e.dependencies[4];
        assert_eq!((socks.kind.as_str(), socks.optional), ("extra:socks", true));
        assert!(
            socks.requirement.contains(">=1.5.6") && socks.requirement.contains("!=1.5.7"),
            "{}",
            socks.requirement
        );
        assert!(
            socks.marker.contains("extra == 'socks'"),
            "{}",
            socks.marker
        );
        assert_eq!(
            (
                e.dependencies[0].kind.as_str(),
                e.dependencies[0].optional,
                e.dependencies[0].marker.as_str()
            ),
            ("runtime", false, "")
        );
    }

    #[test]
    fn markers_and_requirement_extras_are_kept() {
        let text = "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.0\n\
Requires-Dist: importlib-metadata>=3.6; python_version < \"3.10\"\nRequires-Dist: uvicorn[standard]>=0.20\n";
        let e = from_metadata(text, false).unwrap();
        assert_eq!(e.name, "demo-pkg");
        assert!(
            e.dependencies[0]
                .marker
                .contains("python_full_version < '3.10'")
                || e.dependencies[0].marker.contains("python_version < '3.10'"),
            "{}",
            e.dependencies[0].marker
        );
        assert_eq!(e.dependencies[1].requirement, "[standard]>=0.20");
        assert_eq!(
            split_requirement("[standard]>=0.20"),
            (vec!["standard".to_string()], ">=0.20")
        );
    }

    #[test]
    fn extras_come_from_the_marker_not_from_strings_in_it() {
        assert_eq!(extra_of("extra == 'socks'").as_deref(), Some("socks"));
        assert_eq!(
            extra_of("python_version >= '3.8' and extra == \"test\"").as_deref(),
            Some("test")
        );
        assert_eq!(
            extra_of("platform_version == 'extra == é'"),
            None,
            "inside a string literal; no panic on non-ASCII"
        );
        assert_eq!(extra_of("platform_version == 'extra == \"x\"'"), None);
        let text = "Metadata-Version: 2.1\nName: x\nVersion: 1\nRequires-Dist: y; platform_version == \"extra == é\"\n";
        let e = from_metadata(text, false).unwrap();
        assert_eq!(
            (e.dependencies[0].kind.as_str(), e.dependencies[0].optional),
            ("runtime", false)
        );
    }

    #[test]
    fn sdists_are_known_only_from_metadata_2_2_without_dynamic_requires() {
        let old = "Metadata-Version: 2.1\nName: docopt\nVersion: 0.6.2\n";
        assert!(!from_metadata(old, true).unwrap().known);
        let dynamic = "Metadata-Version: 2.2\nName: x\nVersion: 1\nDynamic: Requires-Dist\n";
        assert!(!from_metadata(dynamic, true).unwrap().known);
        let fine = "Metadata-Version: 2.4\nName: x\nVersion: 1\nRequires-Dist: six\n";
        let e = from_metadata(fine, true).unwrap();
        assert!(e.known);
        assert_eq!(e.dependencies[0].name, "six");
        assert!(from_metadata("Name: x\n", false).is_err());
        assert!(from_metadata(
            "Metadata-Version: 2.1\nName: x\nVersion: 1\nRequires-Dist: ???\n",
            false
        )
        .is_err());
    }
}
