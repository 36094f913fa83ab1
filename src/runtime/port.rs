use std::io;
use std::net::{SocketAddr, TcpListener};

/// A loopback port that is free right now. The instance binds it a moment
/// later; a clash in between shows up as a failed start and is retried.
pub fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(listener.local_addr()?.port())
}
