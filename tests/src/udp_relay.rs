//! A UDP relay between a spoke and its hub that the test can block, to
//! play a network where UDP does not get through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::UdpSocket;

/// A relay on 127.0.0.1 forwarding datagrams to `upstream` and back.
#[derive(Debug)]
pub struct UdpRelay {
    /// Where spokes send.
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    /// Starts a relay to `upstream`, blocked or not.
    pub async fn start(upstream: SocketAddr, blocked: bool) -> UdpRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        back.connect(upstream).await.unwrap();
        let addr = front.local_addr().unwrap();
        let flag = Arc::new(AtomicBool::new(blocked));
        let (f, b, blk) = (front.clone(), back.clone(), flag.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    r = f.recv_from(&mut up) => if let Ok((n, from)) = r {
                        client = Some(from);
                        if !blk.load(Ordering::Relaxed) {
                            let _ = b.send(&up[..n]).await;
                        }
                    },
                    r = b.recv(&mut down) => if let (Ok(n), Some(to)) = (r, client)
                        && !blk.load(Ordering::Relaxed)
                    {
                        let _ = f.send_to(&down[..n], to).await;
                    },
                }
            }
        });
        UdpRelay {
            addr,
            blocked: flag,
            task,
        }
    }

    /// Drops (`true`) or passes (`false`) every datagram from now on.
    pub fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
