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

/// The one frame decoder, without I/O: bytes in, a frame or an error out. The server's
/// reader, the blocking client and the tests read through it, and the fuzz target drives it.
///
/// Read into [`FrameDecoder::buffer`] (as much as [`FrameDecoder::missing`] says, or more:
/// bytes past the frame are an error, as LAVA's coordinator drops such a request too), then
/// call [`FrameDecoder::decode`]. The buffer grows only as the caller grows it, never on the
/// header's word, so a header announcing a large body reserves nothing.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_body: usize,
    /// Bytes the frame needs in all: the header's, then the header's and the body's.
    need: usize,
    header_read: bool,
}

impl FrameDecoder {
    pub fn new(max_body: usize) -> Self {
        Self::with_capacity(max_body, 0)
    }

    pub fn with_capacity(max_body: usize, capacity: usize) -> Self {
        FrameDecoder {
            buf: Vec::with_capacity(capacity),
            max_body,
            need: HEADER_LEN,
            header_read: false,
        }
    }

    /// Where received bytes go (append only).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes the frame needs, as far as is known yet (the header's until it
    /// is whole).
    pub fn missing(&self) -> usize {
        self.need.saturating_sub(self.buf.len())
    }

    /// Appends `bytes` and decodes (for readers that do not read into the buffer).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<String>, FrameError> {
        self.buf.extend_from_slice(bytes);
        self.decode()
    }

    /// The frame's body once it is whole; `Ok(None)` while more is needed.
    pub fn decode(&mut self) -> Result<Option<String>, FrameError> {
        if !self.header_read && self.buf.len() >= HEADER_LEN {
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&self.buf[..HEADER_LEN]);
            let len = parse_header(&header)?;
            if len > self.max_body {
                return Err(FrameError::TooLarge {
                    len,
                    max: self.max_body,
                });
            }
            self.header_read = true;
            self.need = HEADER_LEN + len;
        }
        if !self.header_read || self.buf.len() < self.need {
            return Ok(None);
        }
        if self.buf.len() > self.need {
            return Err(FrameError::TrailingBytes);
        }
        let mut body = std::mem::take(&mut self.buf);
        body.drain(..HEADER_LEN);
        String::from_utf8(body)
            .map(Some)
            .map_err(|_| FrameError::NotUtf8)
    }

    /// The peer closed its side: `Ok(())` when nothing had arrived (LAVA's coordinator closes
    /// without a reply for `complete`), else the frame is truncated.
    pub fn closed(&self) -> Result<(), FrameError> {
        match self.buf.len() {
            0 => Ok(()),
            got if !self.header_read => Err(FrameError::Truncated {
                expected: HEADER_LEN,
                got,
            }),
            got => Err(FrameError::Truncated {
                expected: self.need - HEADER_LEN,
                got: got - HEADER_LEN,
            }),
        }
    }
}

/// Reads one frame from a blocking reader; `Ok(None)` when the peer closed before sending
/// anything (LAVA's coordinator does that for `complete`). Reads no byte past the frame.
pub fn read_frame(reader: &mut impl Read, max_body: usize) -> Result<Option<String>, FrameError> {
    let mut decoder = FrameDecoder::with_capacity(max_body, 4096);
    let mut block = [0u8; 4096];
    loop {
        let want = decoder.missing().min(block.len());
        let n = match reader.read(&mut block[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            decoder.closed()?;
            return Ok(None);
        }
        if let Some(body) = decoder.feed(&block[..n])? {
            return Ok(Some(body));
        }
    }
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

    #[test]
    fn the_decoder_takes_a_frame_in_any_split_and_refuses_what_follows_it() {
        let frame = encode(r#"{"request": "lava_send"}"#);
        for cut in 0..=frame.len() {
            let mut d = FrameDecoder::new(100);
            let first = d.feed(&frame[..cut]).unwrap();
            if cut < frame.len() {
                assert_eq!(first, None, "cut {cut}");
                assert!(d.missing() > 0);
                let body = d.feed(&frame[cut..]).unwrap();
                assert_eq!(body.as_deref(), Some(r#"{"request": "lava_send"}"#));
            } else {
                assert!(first.is_some());
            }
        }
        let mut d = FrameDecoder::new(100);
        assert!(matches!(
            d.feed(&[frame.as_slice(), b"x"].concat()),
            Err(FrameError::TrailingBytes)
        ));
        let mut d = FrameDecoder::new(100);
        assert_eq!(d.feed(b"0000").unwrap(), None);
        assert_eq!(d.missing(), 4);
        assert!(matches!(
            d.closed(),
            Err(FrameError::Truncated {
                expected: 8,
                got: 4
            })
        ));
        assert!(FrameDecoder::new(100).closed().is_ok());
    }
}
