//! Test-only helpers shared by the integration tests of the Avail crates.
//!
//! [`AvailNode`] runs the real `avail server` on ports of 127.0.0.1 it picks itself.
//! The other main piece is [`Postgres`]: a real, throwaway PostgreSQL server in a
//! temporary directory on a free port of 127.0.0.1, started with the server
//! binaries of the machine (`/usr/lib/postgresql/*/bin`). It can also be set up
//! as a synchronous primary with a hot standby, so failover tests can kill the
//! primary and promote the standby. Everything is synchronous (`std::process`)
//! and everything is stopped and removed when the value is dropped, including
//! while a failing test unwinds.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, every server
//! command runs as the `postgres` system user through `runuser`.
//!
//! ```no_run
//! let pg = avail_testkit::Postgres::start()?;
//! pg.create_database("avail_management")?;
//! assert_eq!(pg.psql("avail_management", "SELECT 1 + 1")?.trim(), "2");
//! let url = pg.url("avail_management"); // postgres://postgres@127.0.0.1:PORT/avail_management
//! # let _ = url;
//! # Ok::<(), anyhow::Error>(())
//! ```

mod autofailover;
pub mod ha;
mod haproxy;
mod nginx;
mod node;
mod postgres;
mod process;
mod random;

pub use autofailover::{FailoverTimes, Formation};
pub use haproxy::Haproxy;
pub use nginx::Nginx;
pub use node::{AvailNode, http_status};
pub use postgres::{Postgres, bin_dir};
pub use random::random_file;

/// A port of 127.0.0.1 that was free a moment ago (bound to port 0 and let go).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    use anyhow::Context as _;
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}
