DROP TABLE resolution_results;
DROP TABLE artifact_dependencies;
DROP TABLE cached_urls;
DROP TABLE artifacts;
DROP TABLE upstream_sources;
