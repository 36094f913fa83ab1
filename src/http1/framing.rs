//! How a message's body is delimited, and the taking of its frames out of
//! the bytes read from the connection: a `content-length`, chunks (with
//! extensions, which are passed over, and trailer fields), or the close
//! of the connection.

use std::io::Write;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::WireError;
use super::fields::parse_trailers;

/// The longest chunk-size line taken (size, extensions, line end).
const MAX_CHUNK_LINE: usize = 4096;

/// Where an answer's body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes still to come.
    Length(u64),
    /// In chunks.
    Chunked(Chunk),
    /// Everything until the instance closes the connection.
    UntilClose,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of the current chunk still to come.
    Data(u64),
    /// The line end after a chunk's data comes next.
    DataEnd,
    /// The trailer section (maybe empty) after the last chunk.
    Trailers,
    /// Read to its end.
    Done,
}

/// What the bytes in the buffer gave.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    /// The body ended (no trailers).
    End,
    /// More bytes are needed.
    NeedMore,
}

impl Framing {
    /// A body with nothing in it (to HEAD, 204, 304, or length 0).
    pub(crate) fn empty() -> Self {
        Framing::Length(0)
    }

    pub(crate) fn chunked() -> Self {
        Framing::Chunked(Chunk::Size)
    }

    /// Whether the body has been read to its end.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }

    /// The bytes still to come, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Framing::Length(left) => Some(*left),
            Framing::Chunked(Chunk::Done) => Some(0),
            _ => None,
        }
    }

    /// Takes the next frame out of `buf` (bytes of data shared, not
    /// copied). A body that ends with the connection never ends here: the
    /// connection's reader ends it at the close.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        match self {
            Framing::Length(0) => Ok(Decoded::End),
            Framing::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= take as u64;
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Framing::UntilClose => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                Ok(Decoded::Data(buf.split().freeze()))
            }
            Framing::Chunked(chunk) => chunk.decode(buf),
        }
    }
}

impl Chunk {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match *self {
                Chunk::Size => {
                    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_CHUNK_LINE {
                            return Err(malformed("a chunk-size line is too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    let line = buf.split_to(end + 1);
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    *self = match left - take as u64 {
                        0 => Chunk::DataEnd,
                        left => Chunk::Data(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunk::DataEnd => match buf.first() {
                    None => return Ok(Decoded::NeedMore),
                    Some(b'\n') => {
                        let _ = buf.split_to(1);
                        *self = Chunk::Size;
                    }
                    Some(b'\r') => match buf.get(1) {
                        None => return Ok(Decoded::NeedMore),
                        Some(b'\n') => {
                            let _ = buf.split_to(2);
                            *self = Chunk::Size;
                        }
                        Some(_) => return Err(malformed("a chunk does not end with CRLF")),
                    },
                    Some(_) => return Err(malformed("a chunk is longer than its size")),
                },
                Chunk::Trailers => {
                    // No trailer fields: just the blank line.
                    match (buf.first(), buf.get(1)) {
                        (None, _) | (Some(b'\r'), None) => return Ok(Decoded::NeedMore),
                        (Some(b'\n'), _) => {
                            let _ = buf.split_to(1);
                            *self = Chunk::Done;
                            return Ok(Decoded::End);
                        }
                        (Some(b'\r'), Some(b'\n')) => {
                            let _ = buf.split_to(2);
                            *self = Chunk::Done;
                            return Ok(Decoded::End);
                        }
                        _ => {}
                    }
                    return match parse_trailers(buf)? {
                        None => Ok(Decoded::NeedMore),
                        Some(trailers) => {
                            *self = Chunk::Done;
                            Ok(Decoded::Trailers(trailers))
                        }
                    };
                }
                Chunk::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Writes one chunk of a chunked body.
pub(crate) fn write_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        // An empty chunk would end the body.
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Writes the end of a chunked body, with its trailer fields.
pub(crate) fn write_last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The size on a chunk-size line (hex digits, then maybe `;` and
/// extensions, which are passed over).
fn chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(malformed("a chunk-size line without a size"));
    }
    if digits > 15 {
        return Err(malformed("a chunk size is too large"));
    }
    let rest = &line[digits..];
    let rest_ok = match rest.iter().position(|&b| b != b' ' && b != b'\t') {
        None => false,
        Some(at) => matches!(rest[at], b';' | b'\r' | b'\n'),
    };
    if !rest_ok {
        return Err(malformed("a chunk-size line is malformed"));
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let digit = (b as char).to_digit(16).unwrap_or(0);
        size = size * 16 + u64::from(digit);
    }
    Ok(size)
}

fn malformed(what: &str) -> WireError {
    WireError::Malformed(format!("its chunked body: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed to the decoder in pieces of `step` bytes: the
    /// data, the trailers, and whether the body ended.
    fn decode_in_steps(
        mut framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>, bool, BytesMut), WireError> {
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match framing.decode(&mut buf)? {
                Decoded::Data(bytes) => data.extend_from_slice(&bytes),
                Decoded::Trailers(found) => {
                    trailers = Some(found);
                    return Ok((data, trailers, true, buf));
                }
                Decoded::End => return Ok((data, trailers, true, buf)),
                Decoded::NeedMore => {
                    if fed == wire.len() {
                        return Ok((data, trailers, false, buf));
                    }
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers_decode_however_they_arrive() {
        let wire: &[u8] = b"6;name=value\r\nhello \r\n6 ; quoted=\"a;b\"\r\nworld\n\r\n\
            0\r\nx-checksum: 12\r\nx-other: two\r\n\r\nNEXT";
        for step in 1..=wire.len() {
            let (data, trailers, ended, rest) =
                decode_in_steps(Framing::chunked(), wire, step).expect("decodes");
            assert_eq!(data, b"hello world\n", "step {step}");
            assert!(ended, "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-checksum"], "12", "step {step}");
            assert_eq!(trailers["x-other"], "two", "step {step}");
            // What follows the body stays for the connection to judge.
            assert!(b"NEXT".starts_with(&rest), "step {step}: {rest:?}");
        }
    }

    #[test]
    fn chunked_bodies_without_trailers_end_at_the_blank_line() {
        let wire: &[u8] = b"3\r\nabc\r\n0\r\n\r\n";
        for step in 1..=wire.len() {
            let (data, trailers, ended, rest) =
                decode_in_steps(Framing::chunked(), wire, step).expect("decodes");
            assert_eq!(
                (data.as_slice(), trailers, ended),
                (&b"abc"[..], None, true),
                "step {step}"
            );
            assert!(rest.is_empty(), "step {step}");
        }
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for wire in [
            &b"zz\r\nabc\r\n"[..],
            b"3\r\nabcd\r\n",
            b"3 x\r\nabc\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            let error =
                decode_in_steps(Framing::chunked(), wire, wire.len()).expect_err("malformed");
            assert!(
                matches!(error, WireError::Malformed(_)),
                "{wire:?}: {error}"
            );
        }
        let endless = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert!(decode_in_steps(Framing::chunked(), &endless, 512).is_err());
    }

    #[test]
    fn a_length_takes_exactly_its_bytes() {
        let (data, _, ended, rest) =
            decode_in_steps(Framing::Length(5), b"hello, and more", 3).expect("decodes");
        assert_eq!((data.as_slice(), ended), (&b"hello"[..], true));
        assert!(b", and more".starts_with(&rest));
        let (data, _, ended, _) =
            decode_in_steps(Framing::Length(10), b"short", 2).expect("decodes");
        assert_eq!((data.as_slice(), ended), (&b"short"[..], false));
        assert!(Framing::empty().is_done());
    }

    #[test]
    fn a_body_until_the_close_takes_everything_and_never_ends_by_itself() {
        let (data, _, ended, _) =
            decode_in_steps(Framing::UntilClose, b"all of it", 4).expect("decodes");
        assert_eq!((data.as_slice(), ended), (&b"all of it"[..], false));
    }
}
