//! The diesel schema, shared by Postgres and SQLite (see `migrations/`).

diesel::table! {
    upstream_sources (name) {
        name -> Text,
        protocol -> Text,
        url -> Text,
        priority -> Integer,
        enabled -> Bool,
        settings -> Text,
        updated_at -> BigInt,
    }
}

diesel::table! {
    artifacts (sha256) {
        sha256 -> Text,
        size -> BigInt,
        content_type -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    cached_urls (protocol, source, path) {
        protocol -> Text,
        source -> Text,
        path -> Text,
        artifact_sha256 -> Text,
        upstream_url -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    artifact_dependencies (artifact_sha256, position) {
        artifact_sha256 -> Text,
        position -> Integer,
        protocol -> Text,
        name -> Text,
        requirement -> Text,
        kind -> Text,
        optional -> Bool,
        marker -> Text,
    }
}

diesel::table! {
    resolution_results (key) {
        key -> Text,
        artifact_sha256 -> Text,
        result -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    quarantined_artifacts (sha256) {
        sha256 -> Text,
        reason -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(cached_urls -> artifacts (artifact_sha256));
diesel::joinable!(artifact_dependencies -> artifacts (artifact_sha256));
diesel::allow_tables_to_appear_in_same_query!(
    upstream_sources,
    artifacts,
    cached_urls,
    artifact_dependencies,
    resolution_results,
    quarantined_artifacts
);
