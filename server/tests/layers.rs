//! The server's layers and their one-way arrows (docs/architecture.md, "Layers"):
//!
//! ```text
//!   wiring (lib, main, lifecycle)
//!     └─> routes (routes/*: pypi, npm, maven, deps, admin, health; access_log; the
//!           │     `orchard ensure` CLI) ─> state (AppState, the application's handle)
//!           └─> flow (proxy/*)  <── adapters (protocols/*, deps/*) implement what the flow defines
//!                 └─> backends (storage, http_client, file_url, worker_pool, sources) ─> orchard-core
//! ```
//!
//! Every `crate::…` path in a non-test part of `server/src` is classified by the layer of
//! the file it is in and of the module it names; an arrow the table below does not allow
//! fails this test — unless it is listed in `KNOWN` (empty: the crossings that existed
//! when the test was written are gone). A crossing that is gone must leave `KNOWN`
//! too, so the list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Wiring,
    /// `AppState`, the HTTP application's handle: for routes, not for the flow or the
    /// adapters (they take their own handles).
    State,
    Routes,
    Flow,
    Adapters,
    Backends,
    /// `error` (the one error type) and `metrics`/`config`/… re-exported from the core.
    Shared,
}

fn layer_of(module: &str) -> Layer {
    use Layer::*;
    let top = module.split('/').next().unwrap_or("");
    match top {
        "lib" | "main" | "lifecycle" => Wiring,
        "state" => State,
        "routes" | "access_log" => Routes,
        "proxy" => Flow,
        "deps" if module == "deps/cli" => Routes,
        "protocols" | "deps" => Adapters,
        "storage" | "http_client" | "file_url" | "worker_pool" | "sources" => Backends,
        "error" | "cache" | "config" | "credentials" | "db" | "metrics" => Shared,
        other => panic!("module {other:?} has no layer: add it to layer_of"),
    }
}

/// Whether a module of layer `from` may name a module of layer `to`.
fn allowed(from: Layer, to: Layer) -> bool {
    use Layer::*;
    match from {
        Wiring => true,
        State => matches!(to, Flow | Adapters | Backends | Shared),
        Routes => matches!(to, State | Routes | Flow | Adapters | Backends | Shared),
        Flow => matches!(to, Flow | Backends | Shared),
        Adapters => matches!(to, Adapters | Flow | Backends | Shared),
        Backends => matches!(to, Backends | Shared),
        Shared => matches!(to, Shared | Backends),
    }
}

/// Crossings allowed for now (file → module it names); empty since the flow and the
/// adapters take their own handle (`proxy::Flow`). An entry here must say why.
const KNOWN: &[(&str, &str)] = &[];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `protocols/pypi/handlers` for `src/protocols/pypi/handlers.rs`; `proxy` for
/// `src/proxy/mod.rs`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let s = rel.to_string_lossy().replace('\\', "/");
    s.strip_suffix("/mod").unwrap_or(&s).to_string()
}

/// The deepest module of `crate::a::b::c` that exists as a file.
fn resolve(segments: &[&str]) -> Option<String> {
    let mut found = None;
    for n in 1..=segments.len() {
        let path = segments[..n].join("/");
        let (file, dir) = (
            src().join(format!("{path}.rs")),
            src().join(&path).join("mod.rs"),
        );
        if file.exists() || dir.exists() {
            found = Some(path);
        } else if n == 1 {
            // a module re-exported from orchard-core (`crate::config`, …)
            return Some(segments[0].to_string());
        } else {
            break;
        }
    }
    found
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach anywhere).
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Every `crate::x::y` path, including each item of `use crate::{x, y::z}`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |s: &str| -> Vec<String> {
        let mut path = Vec::new();
        for piece in s.split("::") {
            let piece = piece.trim_start();
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                break;
            }
            let whole = name.len() == piece.len();
            path.push(name);
            if !whole {
                break; // the path ended inside this piece
            }
        }
        path
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let preceded = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            if let Some(group) = after.strip_prefix('{') {
                let mut open = 1;
                let end = group
                    .char_indices()
                    .find(|&(_, c)| {
                        open += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        open == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                // top-level items only: nested groups name items of the same module
                let mut depth = 0;
                let mut item = String::new();
                for c in group[..end].chars().chain(std::iter::once(',')) {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            let p = ident(&item);
                            if !p.is_empty() {
                                out.push(p);
                            }
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 {
                        item.push(c);
                    }
                }
            } else {
                let p = ident(after);
                if !p.is_empty() {
                    out.push(p);
                }
            }
        }
        rest = after;
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (file's module, named module) for every arrow the table does not allow.
fn crossings() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = BTreeSet::new();
    for file in files {
        let from = module_of(&file);
        if from.ends_with("/tests") {
            continue; // a test module in a file of its own may reach anywhere
        }
        let from_layer = layer_of(&from);
        let text = code(&file);
        let mut paths = crate_paths(&text);
        // `super::x` names a sibling module: resolve it from the parent's path
        let parent: Vec<String> = {
            let mut p: Vec<String> = from.split('/').map(str::to_string).collect();
            p.pop();
            p
        };
        for rel in crate_paths(&text.replace("super::", "crate::__super__::")) {
            if rel.first().map(String::as_str) == Some("__super__") {
                let mut base = parent.clone();
                let mut rest = &rel[1..];
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                paths.push(base);
            }
        }
        for path in paths {
            let segments: Vec<&str> = path.iter().map(String::as_str).collect();
            let Some(to) = resolve(&segments) else {
                continue;
            };
            if to == from || from.starts_with(&format!("{to}/")) {
                continue;
            }
            if !allowed(from_layer, layer_of(&to)) {
                found.insert((from.clone(), to));
            }
        }
    }
    found
}

#[test]
fn modules_import_along_the_arrows() {
    let found = crossings();
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<String> = found
        .difference(&known)
        .map(|(f, t)| format!("{f} ({:?}) names {t} ({:?})", layer_of(f), layer_of(t)))
        .collect();
    assert!(
        new.is_empty(),
        "imports against the layers (docs/architecture.md):\n  {}",
        new.join("\n  ")
    );
    let gone: Vec<String> = known
        .difference(&found)
        .map(|(f, t)| format!("(\"{f}\", \"{t}\")"))
        .collect();
    assert!(
        gone.is_empty(),
        "these crossings are gone; remove them from KNOWN in server/tests/layers.rs:\n  {}",
        gone.join("\n  ")
    );
}

/// The scanner itself: it finds plain paths and every item of a `use crate::{…}` group.
#[test]
fn paths_are_found() {
    let code = "use crate::{a::b, c, d::{e, f}};\nfn x() { crate::g::h::i(); my_crate::no(); }";
    let got: Vec<String> = crate_paths(code).iter().map(|p| p.join("::")).collect();
    assert_eq!(got, ["a::b", "c", "d", "g::h::i"]);
    assert!(allowed(Layer::Routes, Layer::Flow));
    assert!(!allowed(Layer::Flow, Layer::Routes));
    assert!(!allowed(Layer::Backends, Layer::Flow));
    assert!(!allowed(Layer::Flow, Layer::State));
    assert_eq!(layer_of("routes/npm"), Layer::Routes);
    assert_eq!(layer_of("protocols/npm/packument"), Layer::Adapters);
}
