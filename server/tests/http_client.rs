//! HttpClientManager against a real HTTP server on loopback: connections are kept alive
//! and reused, per-upstream pools send their own auth header and honour their own
//! timeouts, and the active gauge returns to zero.

use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use orchard_server::config::HttpConfig;
use orchard_server::http_client::{HttpClientManager, PoolSettings, UpstreamAuth, UpstreamError};

/// The upstream: `/peer` answers the client's address and port, `/auth` echoes the
/// Authorization header, `/slow` answers after two seconds.
async fn upstream() -> (String, actix_web::dev::ServerHandle) {
    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/peer",
                web::get().to(|req: HttpRequest| async move {
                    HttpResponse::Ok()
                        .body(req.peer_addr().map(|a| a.to_string()).unwrap_or_default())
                }),
            )
            .route(
                "/auth",
                web::get().to(|req: HttpRequest| async move {
                    let v = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    HttpResponse::Ok().body(v)
                }),
            )
            .route(
                "/slow",
                web::get().to(|| async {
                    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
                    HttpResponse::Ok().body("late")
                }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://{addr}"), handle)
}

fn manager() -> HttpClientManager {
    let config = HttpConfig {
        max_connections: 8,
        keepalive_connections: 4,
        connect_timeout_secs: 5,
        read_timeout_secs: 30,
        worker_threads: 2,
    };
    HttpClientManager::new(&config, 1)
}

async fn body(resp: &mut awc::ClientResponse) -> String {
    String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap()
}

#[actix_web::test]
async fn connections_are_reused() {
    let (base, handle) = upstream().await;
    let http = manager();
    let mut first = http.get(None, &format!("{base}/peer"), &[]).await.unwrap();
    let a = body(&mut first).await;
    let mut second = http.get(None, &format!("{base}/peer"), &[]).await.unwrap();
    let b = body(&mut second).await;
    assert_eq!(
        a, b,
        "the second request rode the same kept-alive connection"
    );
    assert_eq!(http.active(), 0);
    handle.stop(false).await;
}

#[actix_web::test]
async fn per_upstream_pools_have_their_own_auth_and_timeouts() {
    let (base, handle) = upstream().await;
    let http = manager();
    http.register(
        "private",
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_millis(300),
            auth: Some(UpstreamAuth::Bearer("s3cr3t-token".to_string().into())),
            origin: orchard_server::http_client::origin_of(&base),
        },
    );
    http.register(
        "basic",
        PoolSettings {
            auth: Some(UpstreamAuth::Basic {
                username: "u".into(),
                password: "p".to_string().into(),
            }),
            origin: orchard_server::http_client::origin_of(&base),
            ..http.default_settings()
        },
    );
    let mut r = http
        .get(Some("private"), &format!("{base}/auth"), &[])
        .await
        .unwrap();
    assert_eq!(body(&mut r).await, "Bearer s3cr3t-token");
    let mut r = http
        .get(Some("basic"), &format!("{base}/auth"), &[])
        .await
        .unwrap();
    assert_eq!(body(&mut r).await, "Basic dTpw");
    let mut r = http.get(None, &format!("{base}/auth"), &[]).await.unwrap();
    assert_eq!(
        body(&mut r).await,
        "none",
        "the default pool sends no credentials"
    );
    // The same pool, another origin (localhost is not 127.0.0.1): no credentials.
    let elsewhere = base.replace("127.0.0.1", "localhost");
    let mut r = http
        .get(Some("private"), &format!("{elsewhere}/auth"), &[])
        .await
        .unwrap();
    assert_eq!(
        body(&mut r).await,
        "none",
        "credentials go to the source's own origin only"
    );

    // The private pool's 300 ms read timeout fires; the default pool (30 s) waits.
    assert!(matches!(
        http.get(Some("private"), &format!("{base}/slow"), &[])
            .await,
        Err(UpstreamError::Timeout)
    ));
    let mut r = http.get(None, &format!("{base}/slow"), &[]).await.unwrap();
    assert_eq!(body(&mut r).await, "late");

    // Re-registering replaces the settings for the next request.
    http.register(
        "private",
        PoolSettings {
            auth: None,
            ..http.default_settings()
        },
    );
    let mut r = http
        .get(Some("private"), &format!("{base}/auth"), &[])
        .await
        .unwrap();
    assert_eq!(body(&mut r).await, "none");
    assert_eq!(http.active(), 0);
    handle.stop(false).await;
}

#[actix_web::test]
async fn unreachable_upstream_is_a_connect_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = manager();
    let r = http
        .get(None, &format!("http://127.0.0.1:{port}/x"), &[])
        .await;
    assert!(matches!(r, Err(UpstreamError::Connect(_))), "{:?}", r.err());
    let failures = orchard_server::metrics::metrics()
        .upstream_requests
        .with_label_values(&["default", "connect_error"])
        .get();
    assert!(failures >= 1);
}

/// An upstream that accepts a connection, reads the request and closes it without an
/// answer (a server shedding load or racing its keep-alive timeout): nothing was
/// processed, so the GET is retried once on a new connection.
#[actix_web::test]
async fn a_get_the_upstream_dropped_unanswered_is_retried_once() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut seen = 0;
        for n in 0..3 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).unwrap();
            seen += 1;
            if n == 0 {
                drop(conn); // no response at all
                continue;
            }
            write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            )
            .unwrap();
            conn.flush().unwrap();
            if n == 1 {
                break;
            }
        }
        seen
    });
    let http = manager();
    let mut res = http
        .get(None, &format!("http://{addr}/x"), &[])
        .await
        .expect("retried on a new connection");
    assert_eq!(body(&mut res).await, "ok");
    assert_eq!(server.join().unwrap(), 2, "one retry, not more");
}

/// An HTTP/1.0 upstream that answers with a Content-Length and no `Connection` header and
/// closes every connection after its response (Python's http.server, some appliances):
/// no request may ride a connection it already closed. 12 at a time, 240 in all.
#[actix_web::test]
async fn connections_an_http10_upstream_closed_are_not_reused() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
                // a short linger before the close, as a real server's teardown takes
                std::thread::sleep(Duration::from_millis(5));
            });
        }
    });
    let http = std::rc::Rc::new(manager());
    let url = format!("http://{addr}/f");
    let mut failures = Vec::new();
    for _ in 0..20 {
        let round = futures::future::join_all((0..12).map(|_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let mut res = http.get(None, &url, &[]).await.map_err(|e| e.to_string())?;
                let b = res.body().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(b)
            }
        }))
        .await;
        for r in round {
            match r {
                Ok(b) => assert_eq!(&b[..], b"hello"),
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 240 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// A source reload registers every pool again: only changed settings rebuild a pool (and
/// drop its kept-alive connections).
#[actix_web::test]
async fn registering_the_same_settings_keeps_the_pool() {
    let (base, handle) = upstream().await;
    let http = manager();
    let settings = |token: &str| PoolSettings {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        auth: Some(UpstreamAuth::Bearer(token.to_string().into())),
        origin: orchard_server::http_client::origin_of(&base),
    };
    http.register("s", settings("one"));
    let v = http.pool_version("s");
    let mut a = http
        .get(Some("s"), &format!("{base}/peer"), &[])
        .await
        .unwrap();
    let first = body(&mut a).await;
    http.register("s", settings("one"));
    assert_eq!(http.pool_version("s"), v, "same settings, same pool");
    let mut b = http
        .get(Some("s"), &format!("{base}/peer"), &[])
        .await
        .unwrap();
    assert_eq!(
        body(&mut b).await,
        first,
        "the kept-alive connection survived the reload"
    );
    http.register("s", settings("two"));
    assert_ne!(
        http.pool_version("s"),
        v,
        "a changed credential rebuilds the pool"
    );
    handle.stop(false).await;
}
