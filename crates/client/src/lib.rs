//! Avail's Linux client, the part that moves package bytes: a
//! content-addressed block cache on disk under a hard quota ([`cache`]) and a
//! streaming engine that fetches byte ranges of package files from several
//! content mirrors with timeouts, retries and failover, and hands out only
//! blocks whose SHA-256 matches the block map ([`fetch`]). The daemon, the
//! publishing refresh and the FUSE mounts of issue 11 are built on these two.

pub mod cache;
pub mod fetch;
