use super::*;
use tokio::net::{TcpListener, TcpStream};

/// A connected pair of loopback sockets: (client, server).
async fn pair() -> (TcpStream, Stream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (client, Stream::Tcp(server))
}

/// The client sees an orderly end: everything before it, then EOF (a reset
/// would be an error here).
async fn ends_in_order(client: &mut TcpStream) {
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .await
        .expect("an orderly close, not a reset");
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(start_paused = true)]
async fn lingering_ends_when_the_client_goes_quiet() {
    let (mut client, server) = pair().await;
    client
        .write_all(b"the rest of a refused body")
        .await
        .expect("write");
    let start = Instant::now();
    linger_close(server, bufs::take(), std::future::pending::<()>()).await;
    let took = start.elapsed();
    assert!((LINGER_IDLE..LINGER_TOTAL).contains(&took), "{took:?}");
    ends_in_order(&mut client).await;
}

#[tokio::test(start_paused = true)]
async fn lingering_ends_at_its_bound_however_long_the_client_sends() {
    let (mut client, server) = pair().await;
    let (mut r, mut w) = client.split();
    let start = Instant::now();
    let sending = async {
        // A byte a second, more often than the idle bound.
        while w.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        () = linger_close(server, bufs::take(), std::future::pending::<()>()) => {}
        () = sending => panic!("the client could not send"),
    }
    let took = start.elapsed();
    assert!(
        took >= LINGER_TOTAL && took < LINGER_TOTAL + LINGER_IDLE,
        "{took:?}"
    );
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
}

#[tokio::test(start_paused = true)]
async fn lingering_ends_when_the_client_closes_or_the_listener_stops() {
    let (mut client, server) = pair().await;
    client.write_all(b"more").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let start = Instant::now();
    linger_close(server, bufs::take(), std::future::pending::<()>()).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    ends_in_order(&mut client).await;

    let (_client, server) = pair().await;
    linger_close(server, bufs::take(), std::future::ready(())).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closes_between_one_and_one_and_a_quarter_timeouts_after_its_last_exchange(
) {
    let timeout = Duration::from_secs(60);
    // Never waited on before: the first tick starts with the first wait.
    let mut idle = IdleClock::new(Some(timeout));
    let start = Instant::now();
    idle.expired().await;
    assert_eq!(start.elapsed(), timeout);

    // Exchanges closer together than the timeout keep it open, whatever
    // the timer's phase.
    let mut idle = IdleClock::new(Some(timeout));
    for gap in [59, 1, 30, 59, 45, 59, 2, 59] {
        tokio::select! {
            () = idle.expired() => panic!("closed {gap} s after an exchange"),
            () = tokio::time::sleep(Duration::from_secs(gap)) => idle.active(),
        }
    }
    let last = Instant::now();
    idle.expired().await;
    let quiet = last.elapsed();
    assert!(
        quiet >= timeout && quiet <= timeout + timeout / 4,
        "{quiet:?}"
    );

    // An exchange that outlasts the timer does not count as quiet time.
    let mut idle = IdleClock::new(Some(timeout));
    tokio::select! {
        () = idle.expired() => panic!("expired"),
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    idle.active();
    let last = Instant::now();
    idle.expired().await;
    let quiet = last.elapsed();
    assert!(
        quiet >= timeout && quiet <= timeout + timeout / 4,
        "{quiet:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_an_idle_timeout_a_connection_waits_forever() {
    let mut idle = IdleClock::new(None);
    tokio::select! {
        () = idle.expired() => panic!("expired without a timeout"),
        () = tokio::time::sleep(Duration::from_secs(86_400 * 365)) => {}
    }
}
