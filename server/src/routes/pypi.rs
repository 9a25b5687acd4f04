//! PyPI routes.
//!
//! | route | what |
//! |---|---|
//! | `/pypi/simple/` | merged root index over every enabled PyPI source |
//! | `/pypi/simple/{project}/` | merged project page: the highest-priority source that has the project serves all of it |
//! | `/sources/{source}/simple/`, `…/simple/{project}/` | the same for one source |
//! | `/sources/{source}/files/{project}/{filename}` | a distribution file |
//! | `/sources/{source}/files/{project}/{filename}.metadata` | its PEP 658 core metadata |
//!
//! Page links are relative (`../../../sources/…` from a merged page, `../../files/…`
//! from a source page), so Orchard works behind a path prefix too.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::cache::Category;
use crate::error::ApiError;
use crate::protocols::pypi::model::ProjectPage;
use crate::protocols::pypi::names::{
    content_type, is_valid_filename, is_valid_project_name, is_wheel, normalize,
};
use crate::protocols::pypi::negotiate::{negotiate, Representation};
use crate::protocols::pypi::{metadata, parse, render};
use crate::protocols::View;
use crate::proxy::artifact::{self, ArtifactSpec, Upstream};
use crate::proxy::document::{self, DocumentRequest, Parser};
use crate::proxy::response;
use crate::proxy::CacheStatus;
use crate::sources::{Protocol, Source};
use crate::state::AppState;
use crate::storage::Expected;

const UPSTREAM_ACCEPT: &str =
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";

/// Relative link from a project page of `view` to a file of `source`.
fn file_href(view: &View, source: &str, project: &str, filename: &str) -> String {
    match view {
        View::Merged => format!("../../../sources/{source}/files/{project}/{filename}"),
        View::Source(_) => format!("../../files/{project}/{filename}"),
    }
}

fn view_label(view: &View) -> &str {
    match view {
        View::Merged => "merged",
        View::Source(s) => s.name(),
    }
}

fn pypi_source(state: &AppState, name: &str) -> Result<Arc<Source>, ApiError> {
    state
        .sources
        .get(Protocol::Pypi, name)
        .ok_or_else(|| ApiError::NotFound(format!("no enabled PyPI source named {name:?}")))
}

fn representation(req: &HttpRequest) -> Result<Representation, ApiError> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    negotiate(accept).ok_or_else(|| {
        ApiError::NotAcceptable(
            "none of the offered types is acceptable: application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html, text/html".into(),
        )
    })
}

fn project_request(state: &AppState, source: &Arc<Source>, project: &str) -> DocumentRequest {
    let base = url::Url::parse(&source.url(&format!("{project}/"))).expect("source URLs are valid");
    let name = project.to_string();
    let parse: Parser = Arc::new(move |body, ct| {
        let page = parse::parse_project(body, ct, &base, &name).map_err(|e| e.to_string())?;
        serde_json::to_string(&page).map_err(|e| e.to_string())
    });
    DocumentRequest {
        protocol: Protocol::Pypi,
        source: source.clone(),
        identifier: format!("project/{project}"),
        url: source.url(&format!("{project}/")),
        accept: UPSTREAM_ACCEPT,
        ttl: source.index_ttl(state.config.cache.ttl_index),
        category: Category::PackageIndex,
        parse,
    }
}

fn root_request(state: &AppState, source: &Arc<Source>) -> DocumentRequest {
    let parse: Parser = Arc::new(|body, ct| {
        let root = parse::parse_root(body, ct).map_err(|e| e.to_string())?;
        serde_json::to_string(&root).map_err(|e| e.to_string())
    });
    DocumentRequest {
        protocol: Protocol::Pypi,
        source: source.clone(),
        identifier: "root".into(),
        url: source.base.to_string(),
        accept: UPSTREAM_ACCEPT,
        ttl: source.index_ttl(state.config.cache.ttl_index),
        category: Category::PackageIndex,
        parse,
    }
}

fn page_response(
    req: &HttpRequest,
    repr: Representation,
    body: Bytes,
    etag: String,
    cache: CacheStatus,
) -> HttpResponse {
    response::page(req, repr.content_type(), body, etag, cache)
}

/// Redirect to the normalised, trailing-slash URL (relative, so path prefixes work).
fn redirect(location: String) -> HttpResponse {
    HttpResponse::MovedPermanently()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn checked_project(raw: &str) -> Result<String, ApiError> {
    if !is_valid_project_name(raw) {
        return Err(ApiError::BadRequest(format!(
            "invalid project name {:?}",
            raw.chars().take(100).collect::<String>()
        )));
    }
    Ok(normalize(raw))
}

/// One render of a merged root at a time per key, per replica.
static ROOT_RENDERS: std::sync::LazyLock<
    crate::proxy::singleflight::SingleFlight<Result<(), String>>,
> = std::sync::LazyLock::new(Default::default);

/// The root index: each source's page is a cached document; the merged, filtered and
/// rendered page is cached too, keyed by the sources' document digests and patterns,
/// and built on the blocking pool by one request while the others wait (a root can list
/// hundreds of thousands of projects).
async fn root_page(
    state: &AppState,
    req: &HttpRequest,
    view: View,
) -> Result<HttpResponse, ApiError> {
    let repr = representation(req)?;
    let mut worst = CacheStatus::Hit;
    let mut parts = Vec::new();
    let mut identity = Sha256::new();
    for source in view.sources(state, Protocol::Pypi) {
        let dreq = root_request(state, &source);
        let (doc, status) = document::get(state, &dreq).await?;
        worst = worse(worst, status);
        if !doc.found() {
            continue;
        }
        identity.update(format!(
            "{}\0{}\0{:?}\0{:?}\0",
            source.name(),
            doc.digest(),
            source.spec.include,
            source.spec.exclude
        ));
        parts.push((source, dreq, doc));
    }
    let id = hex::encode(&identity.finalize()[..12]);
    let key = state.cache.key(
        Category::PackageIndex,
        "pypi",
        &format!("rendered-root/{id}/{}", repr.cache_suffix()),
    );
    let etag = format!("W/\"root-{id}-{}\"", repr.cache_suffix());
    if let Some(body) = state.cache.get(&key).await {
        return Ok(page_response(req, repr, body, etag, worst));
    }
    let ttl = parts
        .iter()
        .map(|(_, d, _)| d.ttl)
        .min()
        .unwrap_or(state.config.cache.ttl_index);
    loop {
        match ROOT_RENDERS.join(&key) {
            crate::proxy::singleflight::Role::Leader(leader) => {
                let mut inputs = Vec::new();
                for (source, dreq, doc) in &parts {
                    inputs.push((source.clone(), document::body(state, dreq, doc).await?));
                }
                let json = repr.is_json();
                let rendered = state
                    .blocking
                    .run(move || -> Result<Bytes, String> {
                        crate::metrics::metrics()
                            .page_renders
                            .with_label_values(&["pypi", "root"])
                            .inc();
                        render::merged_root(&inputs, json)
                    })
                    .await;
                let body = match rendered {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        leader.finish(Err(e.clone()));
                        tracing::error!(error = %e, "stored root index unreadable");
                        return Err(ApiError::Internal);
                    }
                    Err(_) => return Err(ApiError::Internal),
                };
                state
                    .cache
                    .set_with_ttl(&key, body.clone(), Some(ttl))
                    .await;
                leader.finish(Ok(()));
                return Ok(page_response(req, repr, body, etag, worst));
            }
            crate::proxy::singleflight::Role::Follower(rx) => {
                if let Some(Ok(())) = crate::proxy::singleflight::wait(rx).await {
                    if let Some(body) = state.cache.get(&key).await {
                        return Ok(page_response(req, repr, body, etag, worst));
                    }
                }
                // the leader failed or its copy was evicted: render ourselves
            }
        }
    }
}

fn worse(a: CacheStatus, b: CacheStatus) -> CacheStatus {
    let rank = |s| match s {
        CacheStatus::Hit => 0,
        CacheStatus::Bypass => 1,
        CacheStatus::Miss => 2,
        CacheStatus::Stale => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

async fn project_page(
    state: &AppState,
    req: &HttpRequest,
    view: View,
    project: &str,
) -> Result<HttpResponse, ApiError> {
    let repr = representation(req)?;
    let found = document::first_found(
        state,
        view.sources(state, Protocol::Pypi),
        |source| crate::protocols::pypi::names::source_serves(source, project),
        |source| project_request(state, source, project),
    )
    .await?;
    if let Some(document::Found {
        source,
        request: dreq,
        doc,
        status,
    }) = found
    {
        let cached_meta = cached_metadata(state, &source, project).await?;
        let meta_digest =
            hex::encode(&Sha256::digest(serde_json::to_vec(&cached_meta).unwrap_or_default())[..8]);
        let rendered_key = state.cache.key(
            Category::PackageIndex,
            "pypi",
            &format!(
                "rendered/{}/{}/{project}/{}/{meta_digest}/{}",
                view_label(&view),
                source.name(),
                doc.digest(),
                repr.cache_suffix()
            ),
        );
        let etag = format!(
            "W/\"{}-{meta_digest}-{}\"",
            doc.digest(),
            repr.cache_suffix()
        );
        if let Some(body) = state.cache.get(&rendered_key).await {
            return Ok(page_response(req, repr, body, etag, status));
        }
        let body = document::body(state, &dreq, &doc).await?;
        let page: ProjectPage = serde_json::from_str(&body).map_err(|_| ApiError::Internal)?;
        let links: Vec<render::Link<'_>> = page
            .files
            .iter()
            .filter(|f| is_valid_filename(&f.filename))
            .map(|f| render::Link {
                file: f,
                href: file_href(&view, source.name(), project, &f.filename),
                metadata: f.core_metadata.clone().or_else(|| {
                    cached_meta
                        .get(&f.filename)
                        .map(|sha| BTreeMap::from([("sha256".to_string(), sha.clone())]))
                }),
            })
            .collect();
        let body: Bytes = if repr.is_json() {
            render::project_json(&page.name, &links, &page.versions).into()
        } else {
            render::project_html(&page.name, &links).into()
        };
        state
            .cache
            .set_with_ttl(
                &rendered_key,
                body.clone(),
                Some(source.index_ttl(state.config.cache.ttl_index)),
            )
            .await;
        return Ok(page_response(req, repr, body, etag, status));
    }
    Err(ApiError::NotFound(format!(
        "project {project:?} not found in any PyPI source"
    )))
}

/// File name → sha256 of every `.metadata` Orchard holds for the project (cached; one
/// query on a miss).
async fn cached_metadata(
    state: &AppState,
    source: &Source,
    project: &str,
) -> Result<BTreeMap<String, String>, ApiError> {
    let key =
        crate::protocols::pypi::metadata::metadata_list_key(state, source.name(), project).await;
    if let Some(list) = state.cache.get_json::<BTreeMap<String, String>>(&key).await {
        return Ok(list);
    }
    let repo = state.db().ok_or(ApiError::DatabaseUnavailable)?;
    let prefix = format!("{project}/");
    let list: BTreeMap<String, String> = repo
        .list_cached_paths("pypi", source.name(), &prefix)
        .await?
        .into_iter()
        .filter_map(|(path, sha)| {
            path.strip_prefix(&prefix)
                .and_then(|f| f.strip_suffix(".metadata"))
                .map(|f| (f.to_string(), sha))
        })
        .collect();
    state
        .cache
        .set_json(&key, &list, Category::PackageIndex)
        .await;
    Ok(list)
}

/// The file entry of `filename` on the source's project page.
async fn find_file(
    state: &AppState,
    source: &Arc<Source>,
    project: &str,
    filename: &str,
) -> Result<crate::protocols::pypi::model::FileEntry, ApiError> {
    let dreq = project_request(state, source, project);
    let (doc, _) = document::get(state, &dreq).await?;
    if !doc.found() {
        return Err(ApiError::NotFound(format!(
            "project {project:?} not found in source {:?}",
            source.name()
        )));
    }
    let body = document::body(state, &dreq, &doc).await?;
    let page: ProjectPage = serde_json::from_str(&body).map_err(|_| ApiError::Internal)?;
    page.files
        .into_iter()
        .find(|f| f.filename == filename)
        .ok_or_else(|| ApiError::NotFound(format!("{filename:?} is not listed for {project:?}")))
}

async fn file(
    state: &AppState,
    req: &HttpRequest,
    source: &str,
    project: &str,
    filename: &str,
) -> Result<HttpResponse, ApiError> {
    let project = checked_project(project)?;
    let source = pypi_source(state, source)?;
    if !crate::protocols::pypi::names::source_serves(&source, &project) {
        return Err(ApiError::NotFound(format!(
            "source {:?} does not serve {project:?}",
            source.name()
        )));
    }
    if let Some(dist) = filename.strip_suffix(".metadata") {
        return core_metadata(state, req, source, &project, dist).await;
    }
    if !is_valid_filename(filename) {
        return Err(ApiError::BadRequest(
            "invalid distribution file name".into(),
        ));
    }
    let spec = ArtifactSpec {
        protocol: Protocol::Pypi,
        source: source.clone(),
        path: format!("{project}/{filename}"),
        content_type: content_type(filename),
    };
    // dependencies, and for a wheel its PEP 658 metadata file too
    let hook = crate::deps::extraction_hook(Protocol::Pypi, filename).map(|extract| {
        let (source, project, filename) = (source.clone(), project.clone(), filename.to_string());
        Box::new(
            move |state: crate::proxy::Flow, committed: artifact::Committed| {
                if is_wheel(&filename) {
                    actix_web::rt::spawn(metadata::extract_and_store(
                        state.clone(),
                        source,
                        project,
                        filename,
                        committed.clone(),
                    ));
                }
                extract(state, committed);
            },
        ) as artifact::CommitHook
    });
    let resolve = || async {
        let entry = find_file(state, &source, &project, filename).await?;
        let expected = expected_of(&entry.hashes);
        let url = crate::file_url::vet(&source, &entry.url, &expected).await?;
        Ok(Upstream { url, expected })
    };
    artifact::serve(state, req, spec, resolve, hook).await
}

/// The index's hashes that storage can verify.
fn expected_of(hashes: &BTreeMap<String, String>) -> Expected {
    Expected {
        sha256: hashes.get("sha256").cloned(),
        sha512: hashes.get("sha512").cloned(),
        sha1: hashes.get("sha1").cloned(),
    }
}

/// `<file>.metadata`: Orchard's extracted copy, or the upstream's when it offers one.
async fn core_metadata(
    state: &AppState,
    req: &HttpRequest,
    source: Arc<Source>,
    project: &str,
    dist: &str,
) -> Result<HttpResponse, ApiError> {
    if !is_valid_filename(dist) {
        return Err(ApiError::BadRequest(
            "invalid distribution file name".into(),
        ));
    }
    let spec = ArtifactSpec {
        protocol: Protocol::Pypi,
        source: source.clone(),
        path: format!("{project}/{dist}.metadata"),
        content_type: content_type("x.metadata"),
    };
    let resolve = || async {
        let entry = find_file(state, &source, project, dist).await?;
        match &entry.core_metadata {
            Some(hashes) => {
                let expected = expected_of(hashes);
                let url =
                    crate::file_url::vet(&source, &format!("{}.metadata", entry.url), &expected)
                        .await?;
                Ok(Upstream { url, expected })
            }
            None => Err(ApiError::NotFound(format!(
                "no metadata for {dist:?} (yet)"
            ))),
        }
    };
    artifact::serve(state, req, spec, resolve, None).await
}

// --- actix handlers --------------------------------------------------------------

async fn merged_root_no_slash() -> HttpResponse {
    redirect("simple/".into())
}

async fn merged_root(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    root_page(&state, &req, View::Merged).await
}

async fn merged_project(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let project = checked_project(&raw)?;
    if project != raw {
        return Ok(redirect(format!("../{project}/")));
    }
    project_page(&state, &req, View::Merged, &project).await
}

async fn project_no_slash(path: web::Path<(String,)>) -> Result<HttpResponse, ApiError> {
    let project = checked_project(&path.into_inner().0)?;
    Ok(redirect(format!("{project}/")))
}

async fn source_project_no_slash(
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let project = checked_project(&path.into_inner().1)?;
    Ok(redirect(format!("{project}/")))
}

async fn source_root_no_slash() -> HttpResponse {
    redirect("simple/".into())
}

async fn source_root(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let source = pypi_source(&state, &path.into_inner())?;
    root_page(&state, &req, View::Source(source)).await
}

async fn source_project(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (source, raw) = path.into_inner();
    let project = checked_project(&raw)?;
    let source = pypi_source(&state, &source)?;
    if project != raw {
        return Ok(redirect(format!("../{project}/")));
    }
    project_page(&state, &req, View::Source(source), &project).await
}

async fn source_file(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (source, project, filename) = path.into_inner();
    file(&state, &req, &source, &project, &filename).await
}

/// A resource answering GET and HEAD with the same handler.
fn get_and_head<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let resource = web::resource(path);
    let resource = if path.starts_with("/sources/") {
        resource.guard(super::source_protocol(Protocol::Pypi))
    } else {
        resource
    };
    resource
        .route(web::get().to(handler.clone()))
        .route(web::head().to(handler))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_and_head("/pypi/simple", merged_root_no_slash))
        .service(get_and_head("/pypi/simple/", merged_root))
        .service(get_and_head("/pypi/simple/{project}", project_no_slash))
        .service(get_and_head("/pypi/simple/{project}/", merged_project))
        .service(get_and_head(
            "/sources/{source}/simple",
            source_root_no_slash,
        ))
        .service(get_and_head("/sources/{source}/simple/", source_root))
        .service(get_and_head(
            "/sources/{source}/simple/{project}",
            source_project_no_slash,
        ))
        .service(get_and_head(
            "/sources/{source}/simple/{project}/",
            source_project,
        ))
        .service(get_and_head(
            "/sources/{source}/files/{project}/{filename}",
            source_file,
        ));
}
