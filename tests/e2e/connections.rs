//! Connection handling that one client cannot starve, and a drain that loses nothing (SPEC 5, 9):
//! the header deadline (short, for a request head) against the idle timeout (long, between
//! requests), room made at the connection limit by closing the connection idle longest, and
//! `Connection: close` on every answer from the moment shutdown begins. Real TLS clients on
//! loopback against the built binary; every wait is bounded.

use std::time::{Duration, Instant};

use crate::lifecycle::{
    WAIT, client, metric, read_answer, review, review_body, tls_connect, write_head,
};
use crate::support::process::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A client trusting the webhook's development CA.
fn trusting(webhook: &Webhook) -> std::sync::Arc<rustls::ClientConfig> {
    client(
        &[&std::fs::read_to_string(webhook.ca_file()).unwrap()],
        None,
    )
}

/// Waits (bounded) until the server closes the connection: end of stream or a reset. Anything the
/// server sends instead is a failure.
async fn closed_by_server(stream: &mut TlsStream<TcpStream>) -> Result<(), String> {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Err(_) => Err(format!("still open after {WAIT:?}")),
        Ok(Ok(0)) | Ok(Err(_)) => Ok(()),
        Ok(Ok(n)) => Err(format!(
            "the server sent {:?} instead of closing",
            String::from_utf8_lossy(&buf[..n])
        )),
    }
}

/// `stage_guard_connections_closed_total{reason}`, once it reaches `want` (bounded wait).
async fn wait_for_closes(webhook: &Webhook, reason: &str, want: f64) -> f64 {
    let series = format!("stage_guard_connections_closed_total{{reason=\"{reason}\"}}");
    let deadline = Instant::now() + WAIT;
    loop {
        let got = metric(webhook, &series).await.unwrap_or(-1.0);
        if got >= want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_after_the_handshake_is_closed_at_the_header_deadline() {
    let webhook = Webhook::builder().args(&["--header-timeout", "1"]).start();
    let mut silent = tls_connect(webhook.webhook_addr, trusting(&webhook))
        .await
        .unwrap();
    closed_by_server(&mut silent).await.unwrap();
    assert_eq!(wait_for_closes(&webhook, "header_timeout", 1.0).await, 1.0);
    // Logged at warn, with the reason.
    assert!(
        webhook
            .wait_for_log(WAIT, |v| v["level"] == "WARN"
                && v.to_string().contains("header_timeout"))
            .is_some(),
        "{}",
        webhook.lines().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_byte_by_byte_too_slowly_are_cut_off() {
    let webhook = Webhook::builder().args(&["--header-timeout", "1"]).start();
    let mut slow = tls_connect(webhook.webhook_addr, trusting(&webhook))
        .await
        .unwrap();
    // A head that takes 10 s at one byte per 100 ms: ten times the deadline.
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(50)
    );
    let mut sent = 0;
    let mut buf = [0u8; 256];
    let outcome = loop {
        if sent == head.len() {
            break "the whole head was sent without the connection being closed".to_string();
        }
        if slow
            .write_all(&head.as_bytes()[sent..sent + 1])
            .await
            .is_err()
            || slow.flush().await.is_err()
        {
            break String::new();
        }
        sent += 1;
        // Read for the pause between two bytes: the server's close shows up here.
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => break String::new(),
            Ok(Ok(n)) => break format!("answered {:?}", String::from_utf8_lossy(&buf[..n])),
        }
    };
    assert!(outcome.is_empty(), "{outcome} ({sent} bytes sent)");
    assert!(sent < head.len());
    assert_eq!(wait_for_closes(&webhook, "header_timeout", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_stays_open_past_the_header_deadline() {
    let webhook = Webhook::builder().args(&["--header-timeout", "1"]).start();
    let mut conn = tls_connect(webhook.webhook_addr, trusting(&webhook))
        .await
        .unwrap();
    assert_eq!(review(&mut conn, "first").await.unwrap(), "first");
    // Idle three times the header deadline: the idle timeout (120 s) applies between requests.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(review(&mut conn, "second").await.unwrap(), "second");
    assert_eq!(wait_for_closes(&webhook, "header_timeout", 0.0).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_a_newcomer_is_served_and_the_longest_idle_connection_closed() {
    let webhook = Webhook::builder().args(&["--max-connections", "2"]).start();
    let trust = trusting(&webhook);
    let mut oldest = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(review(&mut oldest, "oldest").await.unwrap(), "oldest");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut recent = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(review(&mut recent, "recent").await.unwrap(), "recent");

    // A third client is served at once instead of waiting in the backlog.
    let mut newcomer = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(review(&mut newcomer, "newcomer").await.unwrap(), "newcomer");
    // The connection idle longest made room; it was closed, not reset mid-answer.
    closed_by_server(&mut oldest).await.unwrap();
    assert_eq!(
        review(&mut recent, "recent-again").await.unwrap(),
        "recent-again"
    );
    assert_eq!(wait_for_closes(&webhook, "evicted", 1.0).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_a_request_in_flight_is_never_the_one_closed_to_make_room() {
    let webhook = Webhook::builder().args(&["--max-connections", "2"]).start();
    let trust = trusting(&webhook);
    // The oldest connection has a request in flight: head and half of the body sent.
    let body = review_body("in-flight");
    let mut in_flight = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    write_head(&mut in_flight, body.len()).await.unwrap();
    in_flight.write_all(&body[..body.len() / 2]).await.unwrap();
    in_flight.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut idle = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(review(&mut idle, "idle").await.unwrap(), "idle");

    let mut newcomer = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    assert_eq!(review(&mut newcomer, "newcomer").await.unwrap(), "newcomer");
    closed_by_server(&mut idle).await.unwrap();
    // The request in flight still gets its answer.
    in_flight.write_all(&body[body.len() / 2..]).await.unwrap();
    let answer = read_answer(&mut in_flight).await.unwrap();
    assert_eq!(
        (answer.status, answer.uid()),
        (200, "in-flight".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_every_answer_says_connection_close_and_open_connections_are_answered() {
    let mut webhook = Webhook::builder()
        .args(&["--shutdown-delay", "3", "--shutdown-grace", "10"])
        .start();
    let trust = trusting(&webhook);
    let mut reused = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    let mut unused = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    for (conn, uid) in [(&mut reused, "before-1"), (&mut unused, "before-2")] {
        let body = review_body(uid);
        write_head(conn, body.len()).await.unwrap();
        conn.write_all(&body).await.unwrap();
        let answer = read_answer(conn).await.unwrap();
        assert_eq!((answer.status, answer.uid()), (200, uid.to_string()));
        assert_eq!(answer.header("connection"), None, "{}", answer.head);
    }

    webhook.signal("TERM");
    let signalled = Instant::now();
    while webhook.admin_get("/readyz").await.status != 503 {
        assert!(signalled.elapsed() < WAIT, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A kept-alive connection reused during the delay: answered, and told to stop.
    let body = review_body("reused");
    write_head(&mut reused, body.len()).await.unwrap();
    reused.write_all(&body).await.unwrap();
    let answer = read_answer(&mut reused).await.unwrap();
    assert_eq!((answer.status, answer.uid()), (200, "reused".to_string()));
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{}",
        answer.head
    );
    closed_by_server(&mut reused).await.unwrap();
    // A new connection during the delay: the same.
    let mut fresh = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();
    let body = review_body("fresh");
    write_head(&mut fresh, body.len()).await.unwrap();
    fresh.write_all(&body).await.unwrap();
    let answer = read_answer(&mut fresh).await.unwrap();
    assert_eq!((answer.status, answer.uid()), (200, "fresh".to_string()));
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{}",
        answer.head
    );
    // Opened during the delay, its request sent only after the delay: still answered.
    let mut late = tls_connect(webhook.webhook_addr, trust.clone())
        .await
        .unwrap();

    tokio::time::sleep_until((signalled + Duration::from_secs(4)).into()).await;
    assert!(
        tls_connect(webhook.webhook_addr, trust.clone())
            .await
            .is_err(),
        "new connections are refused after the delay"
    );
    let body = review_body("late");
    write_head(&mut late, body.len()).await.unwrap();
    late.write_all(&body).await.unwrap();
    let answer = read_answer(&mut late).await.unwrap();
    assert_eq!((answer.status, answer.uid()), (200, "late".to_string()));
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{}",
        answer.head
    );
    // The connection nobody used during the delay was closed when it ended, politely.
    closed_by_server(&mut unused).await.unwrap();

    let status = webhook
        .wait_exit(WAIT)
        .expect("the process exits once every connection is closed");
    assert_eq!(status.code(), Some(0));
    let stopped = webhook
        .log_values()
        .into_iter()
        .any(|v| v.to_string().contains("\"stopped\""));
    assert!(stopped, "{}", webhook.lines().join("\n"));
}
