//! [`TcpRelay`]: a loopback TCP relay that can be cut, to partition an
//! adapter from a registry that stays up.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Relays connections from its own loopback port to `upstream`. While cut,
/// existing connections are closed and new ones are closed on accept.
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpRelay {
    /// Starts relaying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("binding the test relay: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("the test relay's address: {e}"),
        };
        let (up, _) = watch::channel(true);
        let task = tokio::spawn(accept(listener, upstream, up.clone()));
        Self { addr, up, task }
    }

    /// The relay's URL, to give the adapter instead of the upstream's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Relays again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, up: watch::Sender<bool>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let mut state = up.subscribe();
        if !*state.borrow_and_update() {
            drop(inbound);
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = state.wait_for(|up| !*up) => {}
            }
        });
    }
}
