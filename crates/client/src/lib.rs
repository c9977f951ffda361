//! Avail's Linux client, the part that moves package bytes: a
//! content-addressed block cache on disk under a hard quota ([`cache`]) and a
//! streaming engine that fetches byte ranges of package files from several
//! content mirrors with timeouts, retries and failover, and hands out only
//! blocks whose SHA-256 matches the block map ([`fetch`]); and the read path
//! that joins them for one package version ([`blocks`]: byte ranges of its
//! files from the cache, missing blocks fetched coalesced with read-ahead,
//! Shared Content Store mode, the cached percentage); and [`fs`], the read-only
//! FUSE filesystem that mounts one package version's `Root\` tree and serves
//! its reads through [`blocks`]. The daemon and the publishing refresh of
//! issue 11 are built on these: [`refresh`] asks a publishing server (any of
//! its URLs, failing over between them) what a machine or a user is published,
//! and [`publications`] keeps the last answer of each server and audience and
//! their union, saved atomically on disk. [`reporting`] is the usage
//! reporting of App-V's `Reporting*` settings: launches and shutdowns queued
//! durably on disk and sent as MS-VAPR SetReport bodies, deleted only once the
//! reporting server has answered `200`.

pub mod blocks;
pub mod cache;
pub mod daemon;
pub mod desktop;
pub mod fetch;
pub mod fs;
pub mod protocol;
pub mod publications;
pub mod refresh;
pub mod reporting;
pub mod sandbox;
pub mod settings;
pub mod state;
pub mod train;
