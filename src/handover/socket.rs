//! The conversation between the two serves, over a Unix socket in the
//! state directory: the old one sends its listening sockets (SCM_RIGHTS)
//! with a greeting; the new one answers `ready` once it accepts on them.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// What the old serve sends along with the sockets (proxy, then admin).
const GREETING: &[u8] = b"switchyard handover 1: proxy, admin\n";
/// What the new serve answers once it accepts on them.
const READY: &[u8] = b"ready\n";

/// Sends the proxy and admin listening sockets.
pub async fn send_listeners(stream: &UnixStream, listeners: [BorrowedFd<'_>; 2]) -> io::Result<()> {
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&listeners)) {
                return Err(io::Error::other("no room for two file descriptors"));
            }
            let iov = [IoSlice::new(GREETING)];
            Ok(rustix::net::sendmsg(
                stream,
                &iov,
                &mut control,
                SendFlags::empty(),
            )?)
        });
        match sent {
            Ok(n) if n == GREETING.len() => return Ok(()),
            Ok(_) => return Err(io::Error::other("the greeting went out in part")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives the proxy and admin listening sockets (close-on-exec, so the
/// processes this serve starts do not inherit them).
pub async fn receive_listeners(stream: &UnixStream) -> io::Result<[OwnedFd; 2]> {
    loop {
        stream.readable().await?;
        let received = stream.try_io(Interest::READABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut greeting = [0u8; 64];
            let mut iov = [IoSliceMut::new(&mut greeting)];
            let msg =
                rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            Ok((greeting[..msg.bytes].to_vec(), fds))
        });
        let (greeting, fds) = match received {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if greeting != GREETING {
            return Err(io::Error::other(format!(
                "unexpected greeting {:?}: is the running serve another version of the handover?",
                String::from_utf8_lossy(&greeting)
            )));
        }
        return <[OwnedFd; 2]>::try_from(fds).map_err(|fds| {
            io::Error::other(format!("expected 2 listening sockets, got {}", fds.len()))
        });
    }
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

    #[tokio::test]
    async fn listening_sockets_cross_to_the_other_side_and_still_accept() {
        let (old, mut new) = UnixStream::pair().expect("socket pair");
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let proxy_addr = proxy.local_addr().expect("addr");
        send_listeners(&old, [proxy.as_fd(), admin.as_fd()])
            .await
            .expect("sent");
        let [got_proxy, got_admin] = receive_listeners(&new).await.expect("received");
        drop(proxy);
        let got_proxy = std::net::TcpListener::from(got_proxy);
        let got_admin = std::net::TcpListener::from(got_admin);
        assert_eq!(got_proxy.local_addr().expect("addr"), proxy_addr);
        assert_eq!(
            got_admin.local_addr().expect("addr"),
            admin.local_addr().expect("addr")
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
}
