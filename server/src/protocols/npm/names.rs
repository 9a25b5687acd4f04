//! npm package names, versions and tarball file names.

/// A package name, plain (`chalk`) or scoped (`@babel/core`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageName {
    pub scope: Option<String>,
    pub name: String,
}

fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 214
        && !p.starts_with('.')
        && !p.starts_with('_')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl PackageName {
    /// Parses `name` or `@scope/name` as npm accepts it (legacy upper-case names too).
    pub fn parse(full: &str) -> Result<PackageName, String> {
        if full.len() > 214 {
            return Err("package name longer than 214 characters".into());
        }
        let (scope, name) = match full.strip_prefix('@') {
            Some(rest) => match rest.split_once('/') {
                Some((scope, name)) => (Some(scope.to_string()), name.to_string()),
                None => return Err(format!("scoped name {full:?} needs @scope/name")),
            },
            None => (None, full.to_string()),
        };
        if scope.as_deref().is_some_and(|s| !valid_part(s)) || !valid_part(&name) {
            return Err(format!(
                "invalid package name {:?}",
                full.chars().take(100).collect::<String>()
            ));
        }
        if scope.is_none()
            && matches!(
                name.to_ascii_lowercase().as_str(),
                "node_modules" | "favicon.ico"
            )
        {
            return Err(format!("{name:?} is a reserved name"));
        }
        Ok(PackageName { scope, name })
    }

    /// `@scope/name` or `name`.
    pub fn full(&self) -> String {
        match &self.scope {
            Some(s) => format!("@{s}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The form registries take in a URL path: `@scope%2fname`.
    pub fn encoded(&self) -> String {
        match &self.scope {
            Some(s) => format!("@{s}%2f{}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A tarball file name that can be a path segment.
pub fn is_valid_tarball(file: &str) -> bool {
    file.len() <= 255
        && file.len() > 4
        && file.ends_with(".tgz")
        && !file.starts_with('.')
        && !file.contains("..")
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+'))
}

/// A version or dist-tag as it may appear in a URL.
pub fn is_valid_version_or_tag(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = PackageName::parse("@babel/core").unwrap();
        assert_eq!(
            (p.scope.as_deref(), p.name.as_str()),
            (Some("babel"), "core")
        );
        assert_eq!(p.full(), "@babel/core");
        assert_eq!(p.encoded(), "@babel%2fcore");
        assert_eq!(
            PackageName::parse("JSONStream").unwrap().full(),
            "JSONStream"
        );
        for bad in [
            "",
            "..",
            "@scope/..",
            "@/x",
            "@scope",
            ".hidden",
            "_private",
            "a b",
            "a/b",
            "@a/b/c",
            "node_modules",
            "%2e%2e",
            &"a".repeat(215),
        ] {
            assert!(PackageName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tarballs_and_versions() {
        assert!(is_valid_tarball("chalk-4.1.2.tgz"));
        assert!(is_valid_tarball("core-7.0.0-beta.1.tgz"));
        for bad in ["../x.tgz", "x.tar.gz", ".tgz", "a/b.tgz", "x..tgz"] {
            assert!(!is_valid_tarball(bad), "{bad}");
        }
        assert!(is_valid_version_or_tag("1.2.3-rc.1+build.5"));
        assert!(is_valid_version_or_tag("latest"));
        assert!(!is_valid_version_or_tag("../1"));
        assert!(!is_valid_version_or_tag(""));
    }
}
