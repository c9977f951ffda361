//! HTTPS listeners: a role with `tls_cert` and `tls_key` serves HTTPS on the
//! port it picked itself (port 0, found in `listen.json`), plain HTTP sent to
//! it gets a clear `400`, and unusable certificate files stop the start with
//! an error that names them. A handshake takes a connection slot and must end
//! within the header-read deadline.

use std::path::Path;
use std::time::Duration;

use avail_server::{Config, LISTEN_FILE};

/// A self-signed certificate for `localhost`, written as PEM files into `dir`:
/// (certificate PEM, config pointing the content role at it on port 0).
fn tls_config(dir: &Path) -> (String, Config) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    let mut config = Config {
        data_dir: dir.join("data"),
        roles: vec!["content".to_owned()],
        ..Config::default()
    };
    config.content.listen = "127.0.0.1:0".parse().unwrap();
    config.content.tls_cert = Some(dir.join("cert.pem"));
    config.content.tls_key = Some(dir.join("key.pem"));
    (cert_pem, config)
}

/// The address the content role bound, once `run` has written it.
async fn bound_content(data_dir: &Path) -> std::net::SocketAddr {
    let file = data_dir.join(LISTEN_FILE);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let bound: serde_json::Value = serde_json::from_str(&text).unwrap();
            return bound["content"].as_str().unwrap().parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_role_serves_https_and_turns_plain_http_away() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, config) = tls_config(dir.path());
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).unwrap();
    // A stale file from an earlier run is not taken for this one's.
    std::fs::write(data_dir.join(LISTEN_FILE), "{\"content\": \"127.0.0.1:1\"}").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(avail_server::run(config, async {
        let _ = stopped.await;
    }));
    let addr = loop {
        let addr = bound_content(&data_dir).await;
        if addr.port() != 1 {
            break addr;
        }
        assert!(!server.is_finished(), "{:?}", server.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(addr.port(), 0);

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let response = client
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    // A client that does not trust the certificate refuses the server.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let refused = untrusting
        .get(format!("https://localhost:{}/healthz", addr.port()))
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // Plain HTTP to the HTTPS port: a 400 that says why, then the connection closes.
    let response = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("HTTPS"),
        "{body}"
    );

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn unusable_certificate_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut config) = tls_config(dir.path());
    let missing = dir.path().join("missing.pem");
    config.content.tls_key = Some(missing.clone());
    let e = avail_server::run(config.clone(), std::future::pending())
        .await
        .unwrap_err();
    let shown = format!("{e:#}");
    assert!(shown.contains(&missing.display().to_string()), "{shown}");

    // A certificate file with no certificate in it.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    config.content.tls_key = Some(dir.path().join("key.pem"));
    config.content.tls_cert = Some(empty.clone());
    let e = avail_server::run(config, std::future::pending())
        .await
        .unwrap_err();
    let shown = format!("{e:#}");
    assert!(shown.contains(&empty.display().to_string()), "{shown}");
}

#[tokio::test]
async fn a_handshake_holds_a_connection_slot_and_has_the_header_deadline() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, mut config) = tls_config(dir.path());
    config.http.header_read_timeout_secs = 1;
    config.http.max_connections = 1;
    let data_dir = config.data_dir.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(avail_server::run(config, async {
        let _ = stopped.await;
    }));
    let addr = bound_content(&data_dir).await;

    // A client that connects and never starts its handshake takes the only slot…
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut shed = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answer = Vec::new();
    shed.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // …until the header deadline closes it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut rest))
        .await
        .expect("the silent connection is still open after 30 s");
    assert!(closed.is_ok_and(|n| n == 0), "{rest:?}");

    // Then the slot serves again.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", addr.port());
    let mut attempts = 0;
    loop {
        match client.get(&url).send().await {
            Ok(response) if response.status() == 200 => break,
            other => {
                attempts += 1;
                assert!(attempts < 200, "{other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
