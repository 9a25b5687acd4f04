//! A project page as Orchard keeps it: parsed from the upstream's HTML or JSON, and
//! rendered again (with Orchard URLs) in whichever form the client asks for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectPage {
    /// The project's name as the upstream spells it (or the normalised one).
    pub name: String,
    pub files: Vec<FileEntry>,
    /// PEP 700 `versions`, when the upstream lists them.
    #[serde(default)]
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub filename: String,
    /// Absolute upstream URL, without fragment.
    pub url: String,
    /// Hash name → hex digest, e.g. `sha256`.
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    #[serde(default)]
    pub requires_python: Option<String>,
    /// PEP 592: `None` = not yanked; `Some(reason)` (possibly empty) = yanked.
    #[serde(default)]
    pub yanked: Option<String>,
    /// PEP 658/714: the upstream serves `<url>.metadata`; hashes of that file (may be empty).
    #[serde(default)]
    pub core_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub upload_time: Option<String>,
}

impl FileEntry {
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.get("sha256").map(String::as_str)
    }
}

/// The root index: project names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootIndex {
    pub projects: Vec<String>,
}
