//! A bare content-role server for `bench/content.sh`: serves `DIR` on
//! `127.0.0.1:PORT` with nothing but [`avail_server::content::router`], so the
//! benchmark measures the role itself and not the rest of `avail server`.
//!
//! Usage: `content-server DIR PORT`

use std::{net::SocketAddr, path::PathBuf};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: content-server DIR PORT");
        std::process::exit(2);
    };
    let port: u16 = port.parse().map_err(std::io::Error::other)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("content-server: serving {dir} on http://{addr}");
    axum::serve(listener, avail_server::content::router(PathBuf::from(dir))).await
}
