//! The conversation between the two serves, over a Unix socket in the
//! state directory: the old one sends its listening sockets and the state
//! directory's lock file (SCM_RIGHTS) with a greeting; the new one answers
//! `ready` once it accepts on them.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// What the old serve sends along with the descriptors: the proxy and
/// admin listening sockets, then the state directory's lock file.
const GREETING: &[u8] = b"switchyard handover 2: proxy, admin, state lock\n";
/// What a serve with a TLS listener sends: its socket comes last.
const GREETING_WITH_TLS: &[u8] = b"switchyard handover 3: proxy, admin, state lock, tls\n";
/// What a serve with TCP services sends: as versions 2 and 3, and a
/// second message follows with its TCP listening sockets.
const GREETING_TCP: &[u8] = b"switchyard handover 4: proxy, admin, state lock; tcp\n";
const GREETING_TCP_WITH_TLS: &[u8] = b"switchyard handover 5: proxy, admin, state lock, tls; tcp\n";
/// The most TCP listening sockets one handover passes.
pub const MAX_TCP: usize = 64;
/// What a serve from before the state lock sends: the two sockets only.
const GREETING_WITHOUT_LOCK: &[u8] = b"switchyard handover 1: proxy, admin\n";
/// What the new serve answers once it accepts on them.
const READY: &[u8] = b"ready\n";

/// What the old serve passes to the new one.
#[derive(Debug)]
pub struct Passed {
    pub proxy: OwnedFd,
    pub admin: OwnedFd,
    /// The state directory's lock file; `None` from a serve that held none.
    pub lock: Option<OwnedFd>,
    /// The TLS listening socket (`serve --tls-listen`), if there is one.
    pub tls: Option<OwnedFd>,
    /// Whether a message with TCP listening sockets follows ([`receive_tcp`]).
    pub tcp_follows: bool,
}

/// Sends the proxy and admin listening sockets and the lock file, and the
/// TLS listening socket when there is one.
pub async fn send(
    stream: &UnixStream,
    fds: [BorrowedFd<'_>; 3],
    tls: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    match tls {
        Some(tls) => {
            let [proxy, admin, lock] = fds;
            send_with(stream, GREETING_WITH_TLS, &[proxy, admin, lock, tls]).await
        }
        None => send_with(stream, GREETING, &fds).await,
    }
}

/// As [`send`], then the TCP services' listening sockets with their
/// addresses (at most [`MAX_TCP`]), for a new serve that reads them with
/// [`receive_tcp`].
pub async fn send_with_tcp(
    stream: &UnixStream,
    fds: [BorrowedFd<'_>; 3],
    tls: Option<BorrowedFd<'_>>,
    tcp: &[(std::net::SocketAddr, BorrowedFd<'_>)],
) -> io::Result<()> {
    if tcp.len() > MAX_TCP {
        return Err(io::Error::other(format!(
            "{} TCP listening sockets, more than the {MAX_TCP} a handover passes",
            tcp.len()
        )));
    }
    match tls {
        Some(tls) => {
            let [proxy, admin, lock] = fds;
            send_with(stream, GREETING_TCP_WITH_TLS, &[proxy, admin, lock, tls]).await?;
        }
        None => send_with(stream, GREETING_TCP, &fds).await?,
    }
    let mut text = tcp
        .iter()
        .map(|(addr, _)| addr.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    text.push('\n');
    let fds: Vec<BorrowedFd<'_>> = tcp.iter().map(|(_, fd)| *fd).collect();
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_TCP))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("no room for the file descriptors"));
            }
            let iov = [IoSlice::new(text.as_bytes())];
            Ok(rustix::net::sendmsg(
                stream,
                &iov,
                &mut control,
                SendFlags::empty(),
            )?)
        });
        match sent {
            Ok(n) if n == text.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("the TCP addresses went out in part")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives the TCP listening sockets [`send_with_tcp`] passes, each with
/// the address it listens on.
pub async fn receive_tcp(stream: &UnixStream) -> io::Result<Vec<(std::net::SocketAddr, OwnedFd)>> {
    let (text, fds) = receive_message(stream, MAX_TCP * 64, MAX_TCP).await?;
    let text = String::from_utf8_lossy(&text);
    let addrs = text
        .split_whitespace()
        .map(|a| {
            a.parse::<std::net::SocketAddr>()
                .map_err(|e| io::Error::other(format!("bad TCP address {a:?}: {e}")))
        })
        .collect::<io::Result<Vec<_>>>()?;
    if addrs.len() != fds.len() {
        return Err(io::Error::other(format!(
            "{} TCP addresses came with {} file descriptors",
            addrs.len(),
            fds.len()
        )));
    }
    Ok(addrs.into_iter().zip(fds).collect())
}

/// One message of at most `max_bytes` with at most `max_fds` file
/// descriptors (received close-on-exec, so the processes this serve starts
/// do not inherit them).
async fn receive_message(
    stream: &UnixStream,
    max_bytes: usize,
    max_fds: usize,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    loop {
        stream.readable().await?;
        let received = stream.try_io(Interest::READABLE, || {
            let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(max_fds))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut bytes = vec![0u8; max_bytes];
            let mut iov = [IoSliceMut::new(&mut bytes)];
            let msg =
                rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            bytes.truncate(msg.bytes);
            Ok((bytes, fds))
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn send_with(stream: &UnixStream, greeting: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(fds)) {
                return Err(io::Error::other("no room for the file descriptors"));
            }
            let iov = [IoSlice::new(greeting)];
            Ok(rustix::net::sendmsg(
                stream,
                &iov,
                &mut control,
                SendFlags::empty(),
            )?)
        });
        match sent {
            Ok(n) if n == greeting.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("the greeting went out in part")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives what the old serve passes (close-on-exec, so the processes
/// this serve starts do not inherit it).
pub async fn receive(stream: &UnixStream) -> io::Result<Passed> {
    let (greeting, fds) = receive_message(stream, 64, 4).await?;
    let tcp_follows = greeting == GREETING_TCP || greeting == GREETING_TCP_WITH_TLS;
    let expected = if greeting == GREETING_WITH_TLS || greeting == GREETING_TCP_WITH_TLS {
        4
    } else if greeting == GREETING || greeting == GREETING_TCP {
        3
    } else if greeting == GREETING_WITHOUT_LOCK {
        2
    } else {
        return Err(io::Error::other(format!(
            "unexpected greeting {:?}: is the running serve another version of the handover?",
            String::from_utf8_lossy(&greeting)
        )));
    };
    if fds.len() != expected {
        return Err(io::Error::other(format!(
            "expected {expected} file descriptors, got {}",
            fds.len()
        )));
    }
    let mut fds = fds.into_iter();
    let (Some(proxy), Some(admin)) = (fds.next(), fds.next()) else {
        return Err(io::Error::other("the listening sockets are missing"));
    };
    Ok(Passed {
        proxy,
        admin,
        lock: fds.next(),
        tls: fds.next(),
        tcp_follows,
    })
}

/// Tells the old serve that this one accepts on the sockets now.
pub async fn say_ready(stream: &mut UnixStream) -> io::Result<()> {
    stream.write_all(READY).await?;
    stream.flush().await
}

/// Waits for the new serve's `ready`; an error if it hangs up first.
pub async fn hear_ready(stream: &mut UnixStream) -> io::Result<()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    while got.len() < READY.len() {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "it hung up before it was ready",
            ));
        }
        got.extend_from_slice(&buf[..n]);
    }
    if got == READY {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "it answered {:?} instead of ready",
            String::from_utf8_lossy(&got)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn listening_sockets_and_the_lock_cross_to_the_other_side_and_still_work() {
        let (old, mut new) = UnixStream::pair().expect("socket pair");
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let lock = tempfile::tempfile().expect("lock file");
        let proxy_addr = proxy.local_addr().expect("addr");
        send(&old, [proxy.as_fd(), admin.as_fd(), lock.as_fd()], None)
            .await
            .expect("sent");
        let passed = receive(&new).await.expect("received");
        drop(proxy);
        let got_proxy = std::net::TcpListener::from(passed.proxy);
        let got_admin = std::net::TcpListener::from(passed.admin);
        assert_eq!(got_proxy.local_addr().expect("addr"), proxy_addr);
        assert_eq!(
            got_admin.local_addr().expect("addr"),
            admin.local_addr().expect("addr")
        );
        let got_lock = std::fs::File::from(passed.lock.expect("the lock came too"));
        assert_eq!(
            got_lock.metadata().expect("stat").ino(),
            lock.metadata().expect("stat").ino()
        );
        // The original is closed here; the received one still accepts.
        let _client = std::net::TcpStream::connect(proxy_addr).expect("connect");
        got_proxy.accept().expect("accepted on the received socket");

        say_ready(&mut new).await.expect("ready sent");
        let mut old = old;
        hear_ready(&mut old).await.expect("ready heard");
        drop(new);
        assert!(hear_ready(&mut old).await.is_err(), "a hang-up is no ready");
    }

    #[tokio::test]
    async fn a_tls_listener_crosses_after_the_lock() {
        let (old, new) = UnixStream::pair().expect("socket pair");
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let tls = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let lock = tempfile::tempfile().expect("lock file");
        send(
            &old,
            [proxy.as_fd(), admin.as_fd(), lock.as_fd()],
            Some(tls.as_fd()),
        )
        .await
        .expect("sent");
        let passed = receive(&new).await.expect("received");
        assert!(passed.lock.is_some());
        let got_tls = std::net::TcpListener::from(passed.tls.expect("the TLS socket came"));
        assert_eq!(
            got_tls.local_addr().expect("addr"),
            tls.local_addr().expect("addr")
        );
    }

    #[tokio::test]
    async fn tcp_listeners_cross_with_their_addresses_after_the_rest() {
        let (old, new) = UnixStream::pair().expect("socket pair");
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let one = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let two = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let lock = tempfile::tempfile().expect("lock file");
        let addrs = [
            one.local_addr().expect("addr"),
            two.local_addr().expect("addr"),
        ];
        send_with_tcp(
            &old,
            [proxy.as_fd(), admin.as_fd(), lock.as_fd()],
            None,
            &[(addrs[0], one.as_fd()), (addrs[1], two.as_fd())],
        )
        .await
        .expect("sent");
        let passed = receive(&new).await.expect("received");
        assert!(passed.tcp_follows && passed.tls.is_none());
        let tcp = receive_tcp(&new).await.expect("TCP received");
        assert_eq!(tcp.len(), 2);
        for (addr, fd) in tcp {
            let listener = std::net::TcpListener::from(fd);
            assert_eq!(listener.local_addr().expect("addr"), addr);
        }
    }

    #[tokio::test]
    async fn a_serve_from_before_the_lock_passes_its_sockets_alone() {
        let (old, new) = UnixStream::pair().expect("socket pair");
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        send_with(&old, GREETING_WITHOUT_LOCK, &[proxy.as_fd(), admin.as_fd()])
            .await
            .expect("sent");
        let passed = receive(&new).await.expect("received");
        assert!(passed.lock.is_none());
    }
}
