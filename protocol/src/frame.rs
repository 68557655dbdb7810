//! Wire framing: `%08X` body length, then the body.
//!
//! Readers never assume that one `read` returns a whole frame: a header or a body may arrive
//! split at any byte.

use std::io::{self, Read};

/// Length of the hex header.
pub const HEADER_LEN: usize = 8;

/// The LAVA dispatcher refuses to send bodies larger than this.
pub const LAVA_MAX_BODY: usize = 0xFFFE;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame header is not 8 hex digits: {0:?}")]
    BadHeader(String),
    #[error("frame body of {len} bytes is over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed after {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error("frame body is not UTF-8")]
    NotUtf8,
    #[error("bytes after the frame's body: the header's length is wrong")]
    TrailingBytes,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Parses the eight-character length header. Upper and lower case hex are accepted.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    if !header.iter().all(u8::is_ascii_hexdigit) {
        return Err(FrameError::BadHeader(
            String::from_utf8_lossy(header).into_owned(),
        ));
    }
    // Eight hex digits always fit: at most 0xFFFF_FFFF.
    let text = std::str::from_utf8(header).map_err(|_| FrameError::NotUtf8)?;
    usize::from_str_radix(text, 16).map_err(|_| FrameError::BadHeader(text.to_owned()))
}

/// Returns header and body as one buffer, so that one `write` sends the whole frame
/// (LAVA's readers count 4096-byte blocks, not bytes).
pub fn encode(body: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(format!("{:08X}", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    out
}

/// Reads exactly `buf.len()` bytes, mapping an early end to [`FrameError::Truncated`].
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(FrameError::Truncated {
                    expected: buf.len(),
                    got,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads one frame from a blocking reader; `Ok(None)` when the peer closed before sending
/// anything (LAVA's coordinator does that for `complete`).
pub fn read_frame(reader: &mut impl Read, max_body: usize) -> Result<Option<String>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(reader, &mut header) {
        Err(FrameError::Truncated { got: 0, .. }) => return Ok(None),
        other => other?,
    }
    let len = parse_header(&header)?;
    if len > max_body {
        return Err(FrameError::TooLarge { len, max: max_body });
    }
    let mut body = vec![0u8; len];
    read_full(reader, &mut body)?;
    String::from_utf8(body)
        .map(Some)
        .map_err(|_| FrameError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per call, like a slow network.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn encodes_upper_case_length() {
        let frame = encode(&"x".repeat(0xAB));
        assert_eq!(&frame[..8], b"000000AB");
        assert_eq!(frame.len(), 8 + 0xAB);
    }

    #[test]
    fn reads_across_partial_reads() {
        let frame = encode(r#"{"response": "ack"}"#);
        let body = read_frame(&mut Trickle(&frame), 100).unwrap();
        assert_eq!(body.as_deref(), Some(r#"{"response": "ack"}"#));
    }

    #[test]
    fn rejects_bad_headers_and_sizes() {
        assert!(matches!(
            read_frame(&mut &b"0000001Zxx"[..], 100),
            Err(FrameError::BadHeader(_))
        ));
        assert!(matches!(
            read_frame(&mut &b"FFFFFFFF"[..], 100),
            Err(FrameError::TooLarge {
                len: 0xFFFF_FFFF,
                ..
            })
        ));
        assert!(matches!(
            read_frame(&mut &b"00000010{}"[..], 100),
            Err(FrameError::Truncated {
                expected: 16,
                got: 2
            })
        ));
        assert!(matches!(
            read_frame(&mut &b"000"[..], 100),
            Err(FrameError::Truncated {
                expected: 8,
                got: 3
            })
        ));
        assert!(matches!(
            read_frame(&mut &b"00000002\xff\xfe"[..], 100),
            Err(FrameError::NotUtf8)
        ));
        assert!(read_frame(&mut &b""[..], 100).unwrap().is_none());
    }
}
