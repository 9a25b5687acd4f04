//! PEP 503 project names and distribution file names.

/// Whether `source` serves the (normalised) project: its patterns are normalised the
/// same way first, so `acme_*` covers `acme-x` and `Acme.*` covers `acme-x`.
pub fn source_serves(source: &crate::sources::Source, project: &str) -> bool {
    source.allows_with(|p| crate::sources::wildcard_match(&normalize_pattern(p), project))
}

/// PEP 503 normalisation of a name pattern, keeping its `*` wildcards.
pub fn normalize_pattern(pattern: &str) -> String {
    pattern
        .split('*')
        .map(normalize)
        .collect::<Vec<_>>()
        .join("*")
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_`, `.` become one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_sep {
                out.push('-');
            }
            in_sep = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_sep = false;
        }
    }
    out
}

/// A valid project name (PEP 508 `name`): ASCII letters and digits, with `.`, `_`, `-`
/// inside, at most 200 characters.
pub fn is_valid_project_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

const DIST_EXTENSIONS: [&str; 7] = [
    ".whl", ".tar.gz", ".zip", ".tar.bz2", ".tar.xz", ".tgz", ".egg",
];

/// A distribution file name that can be a path segment: printable ASCII without
/// separators, not starting with a dot, with a known distribution extension.
pub fn is_valid_filename(name: &str) -> bool {
    name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+' | b'!' | b'~')
        })
        && !name.contains("..")
        && DIST_EXTENSIONS
            .iter()
            .any(|ext| name.len() > ext.len() && name.ends_with(ext))
}

pub fn is_wheel(filename: &str) -> bool {
    filename.ends_with(".whl")
}

/// The project part of a wheel or sdist file name, normalised, when it can be told.
pub fn project_of_filename(filename: &str) -> Option<String> {
    let stem = DIST_EXTENSIONS
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))?;
    if filename.ends_with(".whl") {
        return stem.split('-').next().map(normalize);
    }
    // sdist: name-version, where the name may itself contain '-'.
    let idx = stem.rfind('-')?;
    Some(normalize(&stem[..idx]))
}

/// The version part of a wheel or sdist file name.
pub fn version_of_filename(filename: &str) -> Option<String> {
    let stem = DIST_EXTENSIONS
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))?;
    if filename.ends_with(".whl") {
        return stem.split('-').nth(1).map(str::to_string);
    }
    stem.rfind('-')
        .map(|i| stem[i + 1..].to_string())
        .filter(|v| !v.is_empty())
}

pub fn content_type(filename: &str) -> &'static str {
    if filename.ends_with(".metadata") {
        "application/octet-stream"
    } else if filename.ends_with(".whl") || filename.ends_with(".zip") || filename.ends_with(".egg")
    {
        "application/zip"
    } else if filename.ends_with(".tar.gz") || filename.ends_with(".tgz") {
        "application/gzip"
    } else if filename.ends_with(".tar.bz2") {
        "application/x-bzip2"
    } else if filename.ends_with(".tar.xz") {
        "application/x-xz"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_normalised_names() {
        let spec = crate::sources::SourceSpec {
            name: "s".into(),
            settings: crate::sources::SourceSettings {
                protocol: crate::sources::Protocol::Pypi,
                url: "https://upstream.example/simple/".into(),
                priority: 1,
                enabled: true,
                ttl: None,
                include: vec!["acme_*".into(), "Internal.Tools".into()],
                exclude: vec!["acme_secret*".into()],
                file_hosts: vec![],
            },
            credentials: None,
        };
        let s = crate::sources::Source {
            base: url::Url::parse(&spec.url).unwrap(),
            spec,
        };
        assert!(source_serves(&s, &normalize("acme-x")));
        assert!(source_serves(&s, &normalize("ACME.Y")));
        assert!(source_serves(&s, &normalize("internal_tools")));
        assert!(!source_serves(&s, &normalize("acme.secret-store")));
        assert!(!source_serves(&s, &normalize("requests")));
        assert_eq!(normalize_pattern("Acme__*.x*"), "acme-*-x*");
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("Friendly-Bard"), "friendly-bard");
        assert_eq!(normalize("FRIENDLY_BARD"), "friendly-bard");
        assert_eq!(normalize("friendly.bard"), "friendly-bard");
        assert_eq!(normalize("friendly--._bard"), "friendly-bard");
        assert_eq!(normalize("zope.interface"), "zope-interface");
    }

    #[test]
    fn project_names() {
        for ok in ["a", "requests", "zope.interface", "Foo_Bar-2", "x1"] {
            assert!(is_valid_project_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "-a",
            "a-",
            "a/b",
            "a b",
            "ä",
            "%2e%2e",
            ".hidden",
            &"a".repeat(201),
        ] {
            assert!(!is_valid_project_name(bad), "{bad}");
        }
    }

    #[test]
    fn filenames() {
        for ok in [
            "six-1.16.0-py2.py3-none-any.whl",
            "idna-3.4.tar.gz",
            "pkg-1.0+local.zip",
        ] {
            assert!(is_valid_filename(ok), "{ok}");
        }
        for bad in [
            "../x.whl", "a/b.whl", ".whl", "x.exe", "x..whl", "x%2f.whl", "x.whl\n", "",
        ] {
            assert!(!is_valid_filename(bad), "{bad}");
        }
        assert_eq!(
            project_of_filename("Zope.Interface-5.0-cp311-cp311-linux_x86_64.whl").as_deref(),
            Some("zope-interface")
        );
        assert_eq!(
            project_of_filename("python-dateutil-2.8.2.tar.gz").as_deref(),
            Some("python-dateutil")
        );
        assert_eq!(
            version_of_filename("python-dateutil-2.8.2.tar.gz").as_deref(),
            Some("2.8.2")
        );
        assert_eq!(
            version_of_filename("six-1.16.0-py2.py3-none-any.whl").as_deref(),
            Some("1.16.0")
        );
    }
}
