DROP TABLE quarantined_artifacts;
