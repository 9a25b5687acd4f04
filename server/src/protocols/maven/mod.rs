//! Maven: a repository layout (`/{groupPath}/{artifactId}/{version}/{file}`), its
//! `maven-metadata.xml` files and checksum sidecars.

pub mod coords;
pub mod deps;
