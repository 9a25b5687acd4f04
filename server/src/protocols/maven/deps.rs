//! Maven: a POM's dependencies with scope and optional flag, after building the parts
//! of Maven's effective model that decide them: properties inherited through the
//! parent chain and interpolated (`${…}`, `project.*`), `dependencyManagement` from the
//! parents and from `import`-scoped BOMs, versions and scopes filled from it. Parent and
//! BOM POMs are loaded through `PomLoader` (in the server: Orchard's own Maven route,
//! so they are cached like any other file). XML is parsed with `roxmltree`.

use std::collections::BTreeMap;

use futures::future::LocalBoxFuture;

use crate::deps::ensure::{Entry, Planned};
use crate::deps::resolve::{Candidate, Environment};
use crate::deps::universe::ServerUniverse;
use crate::deps::{dep, Extracted};
use crate::sources::Protocol;

/// Nesting bound for parents and BOM imports (Maven has none; real trees stay < 10).
const MAX_DEPTH: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Gav {
    pub group: String,
    pub artifact: String,
    pub version: String,
}

impl Gav {
    pub fn pom_path(&self) -> String {
        format!(
            "{}/{}/{}/{}-{}.pom",
            self.group.replace('.', "/"),
            self.artifact,
            self.version,
            self.artifact,
            self.version
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepDecl {
    pub group: String,
    pub artifact: String,
    pub version: Option<String>,
    pub scope: Option<String>,
    pub optional: Option<String>,
    pub kind: Option<String>,
    pub classifier: Option<String>,
}

impl DepDecl {
    fn key(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.group,
            self.artifact,
            self.kind.as_deref().unwrap_or("jar"),
            self.classifier.as_deref().unwrap_or("")
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Pom {
    pub group: Option<String>,
    pub artifact: String,
    pub version: Option<String>,
    pub parent: Option<Gav>,
    pub properties: BTreeMap<String, String>,
    pub managed: Vec<DepDecl>,
    pub dependencies: Vec<DepDecl>,
}

fn child<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Option<roxmltree::Node<'a, 'a>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(node: roxmltree::Node, name: &str) -> Option<String> {
    child(node, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn decls(node: Option<roxmltree::Node>) -> Vec<DepDecl> {
    let Some(node) = node else { return vec![] };
    node.children()
        .filter(|c| c.is_element() && c.tag_name().name() == "dependency")
        .map(|d| DepDecl {
            group: text(d, "groupId").unwrap_or_default(),
            artifact: text(d, "artifactId").unwrap_or_default(),
            version: text(d, "version"),
            scope: text(d, "scope"),
            optional: text(d, "optional"),
            kind: text(d, "type"),
            classifier: text(d, "classifier"),
        })
        .collect()
}

pub fn parse_pom(xml: &str) -> Result<Pom, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("POM is not XML: {e}"))?;
    let project = doc.root_element();
    if project.tag_name().name() != "project" {
        return Err("POM root element is not <project>".into());
    }
    let parent = child(project, "parent").map(|p| Gav {
        group: text(p, "groupId").unwrap_or_default(),
        artifact: text(p, "artifactId").unwrap_or_default(),
        version: text(p, "version").unwrap_or_default(),
    });
    let mut properties = BTreeMap::new();
    if let Some(props) = child(project, "properties") {
        for p in props.children().filter(|c| c.is_element()) {
            properties.insert(
                p.tag_name().name().to_string(),
                p.text().unwrap_or("").trim().to_string(),
            );
        }
    }
    Ok(Pom {
        group: text(project, "groupId"),
        artifact: text(project, "artifactId").ok_or("POM has no artifactId")?,
        version: text(project, "version"),
        parent,
        properties,
        managed: decls(
            child(project, "dependencyManagement").and_then(|m| child(m, "dependencies")),
        ),
        dependencies: decls(child(project, "dependencies")),
    })
}

/// Fetches the POM text of a GAV (`None` when it does not exist).
pub trait PomLoader {
    fn load<'a>(&'a self, gav: &'a Gav) -> LocalBoxFuture<'a, Result<Option<String>, String>>;
}

/// The effective model's pieces that decide dependencies.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    pub gav: Gav,
    /// key → managed declaration (version, scope)
    pub managed: BTreeMap<String, DepDecl>,
    pub dependencies: Vec<DepDecl>,
}

/// Longest value interpolation may produce: a property that refers to itself many
/// times would otherwise grow exponentially with every pass.
const MAX_VALUE: usize = 64 * 1024;

/// Replaces `${name}` from `props` (repeatedly, for nested references); unknown
/// references stay as written. Fails when a value grows past `MAX_VALUE`.
pub fn interpolate(value: &str, props: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = value.to_string();
    for _ in 0..10 {
        let mut changed = false;
        let mut next = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(start) = rest.find("${") {
            next.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    match props.get(name) {
                        Some(v) => {
                            next.push_str(v);
                            changed = true;
                        }
                        None => {
                            next.push_str("${");
                            next.push_str(name);
                            next.push('}');
                        }
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    next.push_str(&rest[start..]);
                    rest = "";
                }
            }
            if next.len() > MAX_VALUE {
                return Err(format!("a property expands to more than {MAX_VALUE} bytes"));
            }
        }
        next.push_str(rest);
        out = next;
        if !changed {
            break;
        }
    }
    Ok(out)
}

fn interpolate_decl(d: &DepDecl, props: &BTreeMap<String, String>) -> Result<DepDecl, String> {
    let i = |v: &Option<String>| v.as_ref().map(|s| interpolate(s, props)).transpose();
    Ok(DepDecl {
        group: interpolate(&d.group, props)?,
        artifact: interpolate(&d.artifact, props)?,
        version: i(&d.version)?,
        scope: i(&d.scope)?,
        optional: i(&d.optional)?,
        kind: i(&d.kind)?,
        classifier: i(&d.classifier)?,
    })
}

/// Most distinct parent and BOM POMs one extraction may load.
const MAX_LOADS: usize = 100;

/// One extraction's loads: each POM fetched once, a budget on distinct POMs, and each
/// imported BOM's management computed once (a BOM importing itself, directly or not, is
/// skipped instead of recursing).
struct Ctx<'a> {
    loader: &'a dyn PomLoader,
    texts: std::cell::RefCell<std::collections::HashMap<String, Option<String>>>,
    boms: std::cell::RefCell<std::collections::HashMap<String, BTreeMap<String, DepDecl>>>,
    active: std::cell::RefCell<std::collections::HashSet<String>>,
}

impl Ctx<'_> {
    async fn load(&self, gav: &Gav) -> Result<Option<String>, String> {
        let key = format!("{}:{}:{}", gav.group, gav.artifact, gav.version);
        if let Some(t) = self.texts.borrow().get(&key) {
            return Ok(t.clone());
        }
        if self.texts.borrow().len() >= MAX_LOADS {
            return Err(format!("more than {MAX_LOADS} parent and BOM POMs"));
        }
        let text = self.loader.load(gav).await?;
        self.texts.borrow_mut().insert(key, text.clone());
        Ok(text)
    }
}

/// A POM merged with its parents but not yet interpolated: Maven interpolates after
/// inheritance, so a child's property also changes what a parent declares.
struct Raw {
    group: String,
    artifact: String,
    version: String,
    properties: BTreeMap<String, String>,
    /// Parent-first; later entries override earlier ones with the same key.
    managed: Vec<DepDecl>,
    dependencies: Vec<DepDecl>,
}

fn raw<'a>(xml: String, ctx: &'a Ctx<'a>, depth: usize) -> LocalBoxFuture<'a, Result<Raw, String>> {
    Box::pin(async move {
        if depth > MAX_DEPTH {
            return Err("parent/BOM chain is too deep".into());
        }
        let pom = parse_pom(&xml)?;
        let parent = match &pom.parent {
            Some(gav) => {
                let text = ctx.load(gav).await?.ok_or_else(|| {
                    format!(
                        "parent POM {}:{}:{} not found",
                        gav.group, gav.artifact, gav.version
                    )
                })?;
                Some(raw(text, ctx, depth + 1).await?)
            }
            None => None,
        };
        let group = pom
            .group
            .clone()
            .or_else(|| pom.parent.as_ref().map(|p| p.group.clone()))
            .unwrap_or_default();
        let version = pom
            .version
            .clone()
            .or_else(|| pom.parent.as_ref().map(|p| p.version.clone()))
            .unwrap_or_default();
        let (mut properties, mut managed, mut dependencies) = match parent {
            Some(p) => (p.properties, p.managed, p.dependencies),
            None => Default::default(),
        };
        properties.extend(pom.properties.clone());
        for (k, v) in [
            ("project.groupId", &group),
            ("project.artifactId", &pom.artifact),
            ("project.version", &version),
        ] {
            properties.insert(k.to_string(), v.to_string());
            properties.insert(k.replace("project.", "pom."), v.to_string());
        }
        properties.insert("version".into(), version.clone());
        if let Some(p) = &pom.parent {
            properties.insert("project.parent.version".into(), p.version.clone());
            properties.insert("project.parent.groupId".into(), p.group.clone());
        }
        managed.extend(pom.managed);
        dependencies.extend(pom.dependencies);
        Ok(Raw {
            group,
            artifact: pom.artifact,
            version,
            properties,
            managed,
            dependencies,
        })
    })
}

/// Builds the effective model of `xml` (parents merged, everything interpolated with the
/// final properties, `import`-scoped BOMs' own effective management added), loading
/// parents and BOMs through `loader`.
pub async fn effective(xml: String, loader: &dyn PomLoader) -> Result<Effective, String> {
    let ctx = Ctx {
        loader,
        texts: Default::default(),
        boms: Default::default(),
        active: Default::default(),
    };
    effective_in(xml, &ctx, 0).await
}

fn effective_in<'a>(
    xml: String,
    ctx: &'a Ctx<'a>,
    depth: usize,
) -> LocalBoxFuture<'a, Result<Effective, String>> {
    Box::pin(async move {
        let r = raw(xml, ctx, depth).await?;
        let props = r.properties;
        let gav = Gav {
            group: interpolate(&r.group, &props)?,
            artifact: r.artifact.clone(),
            version: interpolate(&r.version, &props)?,
        };
        let mut managed: BTreeMap<String, DepDecl> = BTreeMap::new();
        let mut imports = Vec::new();
        for d in &r.managed {
            let d = interpolate_decl(d, &props)?;
            if d.scope.as_deref() == Some("import") && d.kind.as_deref() == Some("pom") {
                imports.push(d);
            } else {
                managed.insert(d.key(), d);
            }
        }
        // Explicit entries win over imported ones; earlier imports over later ones.
        for bom in imports {
            let Some(v) = bom.version.clone() else {
                continue;
            };
            let bgav = Gav {
                group: bom.group.clone(),
                artifact: bom.artifact.clone(),
                version: v,
            };
            let key = format!("{}:{}:{}", bgav.group, bgav.artifact, bgav.version);
            let memo = ctx.boms.borrow().get(&key).cloned();
            let entries = match memo {
                Some(m) => m,
                None if ctx.active.borrow().contains(&key) => continue, // imports itself
                None => {
                    let text = ctx.load(&bgav).await?.ok_or_else(|| {
                        format!(
                            "imported BOM {}:{}:{} not found",
                            bgav.group, bgav.artifact, bgav.version
                        )
                    })?;
                    ctx.active.borrow_mut().insert(key.clone());
                    let b = effective_in(text, ctx, depth + 1).await;
                    ctx.active.borrow_mut().remove(&key);
                    let m = b?.managed;
                    ctx.boms.borrow_mut().insert(key, m.clone());
                    m
                }
            };
            for (k, d) in entries {
                managed.entry(k).or_insert(d);
            }
        }
        let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
        let mut dependencies: Vec<DepDecl> = Vec::new();
        for d in &r.dependencies {
            let d = interpolate_decl(d, &props)?;
            match by_key.get(&d.key()) {
                Some(&i) => dependencies[i] = d,
                None => {
                    by_key.insert(d.key(), dependencies.len());
                    dependencies.push(d);
                }
            }
        }
        for d in dependencies.iter_mut() {
            if let Some(m) = managed.get(&d.key()) {
                if d.version.is_none() {
                    d.version = m.version.clone();
                }
                if d.scope.is_none() {
                    d.scope = m.scope.clone();
                }
                if d.optional.is_none() {
                    d.optional = m.optional.clone();
                }
            }
        }
        Ok(Effective {
            gav,
            managed,
            dependencies,
        })
    })
}

/// The dependencies of a POM as rows: name `group:artifact`, requirement = version
/// (a Maven version or range), kind = scope, optional flag; `type`/`classifier` other
/// than the defaults go in the marker column.
pub async fn extract_pom(xml: String, loader: &dyn PomLoader) -> Result<Extracted, String> {
    let e = effective(xml, loader).await?;
    let deps = e
        .dependencies
        .iter()
        .map(|d| {
            let mut marker = Vec::new();
            if let Some(t) = d.kind.as_deref().filter(|t| *t != "jar") {
                marker.push(format!("type={t}"));
            }
            if let Some(c) = &d.classifier {
                marker.push(format!("classifier={c}"));
            }
            dep(
                "maven",
                &format!("{}:{}", d.group, d.artifact),
                d.version.as_deref().unwrap_or(""),
                d.scope.as_deref().unwrap_or("compile"),
                d.optional.as_deref() == Some("true"),
                &marker.join(","),
            )
        })
        .collect();
    Ok(Extracted {
        protocol: "maven".into(),
        name: format!("{}:{}", e.gav.group, e.gav.artifact),
        version: e.gav.version,
        known: true,
        dependencies: deps,
    })
}

/// Maven's dependency rules: a declared (or managed) version is taken as it is, ranges
/// are not resolved; `test`, `provided`, `system` and `import` scopes do not apply.
pub struct Rules;

impl crate::protocols::DependencyRules for Rules {
    fn extractable(&self, filename: &str) -> bool {
        filename.ends_with(".pom")
    }

    fn extractor(&self) -> crate::protocols::Extractor {
        crate::protocols::Extractor::PomWithParents
    }

    fn valid_entry_name(&self, name: &str) -> bool {
        crate::deps::ensure::plain_value(name, ":") && name.matches(':').count() == 1
    }

    fn select(
        &self,
        requirement: &str,
        candidates: &[Candidate],
        _env: &Environment,
    ) -> Result<Option<String>, String> {
        let r = requirement.trim();
        if r.is_empty() {
            return Err("no version declared or managed".into());
        }
        if r.starts_with('[') || r.starts_with('(') {
            return Err(format!(
                "version range {r:?} is not resolved (declare a version)"
            ));
        }
        Ok(candidates
            .iter()
            .any(|c| c.version == r)
            .then(|| r.to_string()))
    }

    fn lists_versions(&self) -> bool {
        false
    }

    fn applies(&self, d: &crate::db::NewDependency, _env: &Environment) -> Result<bool, String> {
        Ok(!matches!(
            d.kind.as_str(),
            "test" | "provided" | "system" | "import"
        ))
    }

    fn dependencies<'a>(
        &'a self,
        u: &'a ServerUniverse,
        name: &'a str,
        version: &'a str,
    ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>> {
        Box::pin(async move {
            let (group, artifact) = name
                .split_once(':')
                .ok_or_else(|| format!("{name:?} is not group:artifact"))?;
            let gav = Gav {
                group: group.into(),
                artifact: artifact.into(),
                version: version.into(),
            };
            let path = format!("/maven/{}", gav.pom_path());
            let fetched = u.local.fetch(&path).await;
            if fetched.status == 404 {
                return Err(format!("{name}:{version} not found"));
            }
            if let Some(e) = fetched.error {
                return Err(e);
            }
            let filename = format!("{artifact}-{version}.pom");
            let e = u
                .extraction(Protocol::Maven, &filename, &fetched.sha256)
                .await?;
            Ok((e, Some(fetched.sha256)))
        })
    }

    fn plan<'a>(
        &'a self,
        _u: &'a ServerUniverse,
        e: &'a Entry,
        _env: &'a Environment,
    ) -> LocalBoxFuture<'a, Result<Planned, String>> {
        Box::pin(async move {
            let version = e.version.clone().ok_or("Maven entries need a version")?;
            let (group, artifact) = e
                .name
                .split_once(':')
                .ok_or_else(|| format!("{:?} is not group:artifact", e.name))?;
            let dir = format!("/maven/{}/{artifact}/{version}", group.replace('.', "/"));
            let pom = format!("{artifact}-{version}.pom");
            let mut files = vec![(format!("{dir}/{pom}"), pom)];
            let packaging = e.packaging.clone().unwrap_or_else(|| "jar".into());
            if packaging != "pom" {
                let ext = if matches!(packaging.as_str(), "bundle" | "maven-plugin") {
                    "jar".to_string()
                } else {
                    packaging
                };
                let file = match &e.classifier {
                    Some(c) => format!("{artifact}-{version}-{c}.{ext}"),
                    None => format!("{artifact}-{version}.{ext}"),
                };
                files.push((format!("{dir}/{file}"), file));
            }
            Ok((version, files))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<String, String>);
    impl PomLoader for Map {
        fn load<'a>(&'a self, gav: &'a Gav) -> LocalBoxFuture<'a, Result<Option<String>, String>> {
            Box::pin(async move {
                Ok(self
                    .0
                    .get(&format!("{}:{}:{}", gav.group, gav.artifact, gav.version))
                    .cloned())
            })
        }
    }

    #[tokio::test]
    async fn parent_properties_management_and_boms() {
        let parent = r#"<project><groupId>org.acme</groupId><artifactId>parent</artifactId><version>2</version>
            <properties><lib.version>1.5</lib.version></properties>
            <dependencyManagement><dependencies>
              <dependency><groupId>org.lib</groupId><artifactId>lib</artifactId><version>${lib.version}</version></dependency>
              <dependency><groupId>org.bom</groupId><artifactId>bom</artifactId><version>3.0</version><type>pom</type><scope>import</scope></dependency>
            </dependencies></dependencyManagement>
            <dependencies><dependency><groupId>org.log</groupId><artifactId>log</artifactId><version>9</version></dependency></dependencies>
            </project>"#;
        let bom = r#"<project><groupId>org.bom</groupId><artifactId>bom</artifactId><version>3.0</version>
            <dependencyManagement><dependencies>
              <dependency><groupId>org.x</groupId><artifactId>x</artifactId><version>3.1</version><scope>runtime</scope></dependency>
              <dependency><groupId>org.lib</groupId><artifactId>lib</artifactId><version>0.1</version></dependency>
            </dependencies></dependencyManagement></project>"#;
        let child = r#"<project><parent><groupId>org.acme</groupId><artifactId>parent</artifactId><version>2</version></parent>
            <artifactId>app</artifactId>
            <properties><lib.version>1.6</lib.version></properties>
            <dependencies>
              <dependency><groupId>org.lib</groupId><artifactId>lib</artifactId></dependency>
              <dependency><groupId>org.x</groupId><artifactId>x</artifactId><optional>true</optional></dependency>
              <dependency><groupId>${project.groupId}</groupId><artifactId>sibling</artifactId><version>${project.version}</version><scope>test</scope></dependency>
            </dependencies></project>"#;
        let loader = Map(HashMap::from([
            ("org.acme:parent:2".to_string(), parent.to_string()),
            ("org.bom:bom:3.0".to_string(), bom.to_string()),
        ]));
        let e = extract_pom(child.to_string(), &loader).await.unwrap();
        assert_eq!((e.name.as_str(), e.version.as_str()), ("org.acme:app", "2"));
        let rows: Vec<(&str, &str, &str, bool)> = e
            .dependencies
            .iter()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.requirement.as_str(),
                    d.kind.as_str(),
                    d.optional,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("org.log:log", "9", "compile", false),
                ("org.lib:lib", "1.6", "compile", false),
                ("org.x:x", "3.1", "runtime", true),
                ("org.acme:sibling", "2", "test", false),
            ]
        );
        let missing = Map(HashMap::new());
        assert!(extract_pom(child.to_string(), &missing)
            .await
            .unwrap_err()
            .contains("parent POM org.acme:parent:2"));
        assert!(parse_pom("<nope/>").is_err());
        assert!(parse_pom("not xml").is_err());
    }

    #[test]
    fn interpolation() {
        let p = BTreeMap::from([
            ("a".to_string(), "${b}".to_string()),
            ("b".to_string(), "1".to_string()),
        ]);
        assert_eq!(interpolate("v${a}-${c}", &p).unwrap(), "v1-${c}");
        // A self-referencing property that would double every pass is refused.
        let bomb = BTreeMap::from([("a".to_string(), "${a}".repeat(1000))]);
        assert!(interpolate("${a}", &bomb)
            .unwrap_err()
            .contains("more than"));
    }

    #[tokio::test]
    async fn boms_importing_themselves_and_many_imports_stay_bounded() {
        struct Counting(std::cell::Cell<usize>, String);
        impl PomLoader for Counting {
            fn load<'a>(
                &'a self,
                _gav: &'a Gav,
            ) -> LocalBoxFuture<'a, Result<Option<String>, String>> {
                self.0.set(self.0.get() + 1);
                Box::pin(async move { Ok(Some(self.1.clone())) })
            }
        }
        let import = "<dependency><groupId>g</groupId><artifactId>b</artifactId><version>1</version><type>pom</type><scope>import</scope></dependency>";
        let bom = format!(
            "<project><groupId>g</groupId><artifactId>b</artifactId><version>1</version><dependencyManagement><dependencies>{}\
             <dependency><groupId>x</groupId><artifactId>y</artifactId><version>2</version></dependency></dependencies></dependencyManagement></project>",
            import.repeat(10)
        );
        let loader = Counting(std::cell::Cell::new(0), bom.clone());
        let app = format!(
            "<project><groupId>a</groupId><artifactId>app</artifactId><version>1</version><dependencyManagement><dependencies>{}</dependencies></dependencyManagement>\
             <dependencies><dependency><groupId>x</groupId><artifactId>y</artifactId></dependency></dependencies></project>",
            import.repeat(10)
        );
        let e = extract_pom(app, &loader).await.unwrap();
        assert_eq!(e.dependencies[0].requirement, "2");
        assert_eq!(loader.0.get(), 1, "the BOM is loaded once");
    }
}
