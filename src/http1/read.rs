//! Reads from a connection into its read buffer, holding no more buffer
//! than the bytes it has: a read of a message's head into an empty buffer
//! lands on the stack and is then copied into an allocation just as
//! large, so a connection between messages holds none. The body of a
//! message is read into the buffer's own room ([`poll_read_body`]): a
//! large one would otherwise be copied once more on the way.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Bytes a read into an empty buffer may take.
const FIRST_READ: usize = 8 * 1024;

/// Room made for each further read (the rest of a long head, a body).
const READ_MORE: usize = 16 * 1024;

/// Reads more bytes of a head into `buf`: the count, 0 at the end of the
/// stream.
pub(crate) fn poll_read<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        let mut stack = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut landed = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(io).poll_read(cx, &mut landed))?;
        let filled = landed.filled();
        // Whatever the buffer held before (shared with bytes handed out,
        // or sized for an earlier message) is let go.
        *buf = BytesMut::with_capacity(filled.len());
        buf.extend_from_slice(filled);
        return Poll::Ready(Ok(filled.len()));
    }
    buf.reserve(READ_MORE);
    let reading = pin!(io.read_buf(buf));
    reading.poll(cx)
}

/// Reads more bytes of a body into `buf`, in its own room (its allocation
/// reused once the bytes handed out before are gone): the count, 0 at the
/// end of the stream.
pub(crate) fn poll_read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    buf.reserve(READ_MORE);
    let reading = pin!(io.read_buf(buf));
    reading.poll(cx)
}
