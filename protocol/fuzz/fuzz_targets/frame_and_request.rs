//! Any bytes a client may send, split anywhere: the one frame decoder and the request parser
//! must return an error or a value, never panic; the decoder must give the same answer however
//! the bytes arrive (all at once, split at any byte, through the blocking reader); a parsed
//! request must survive a round trip.
#![no_main]

use lava_protocol::frame::{read_frame, FrameDecoder};
use lava_protocol::Request;
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 20;

/// The decoder's answer to `chunks` arriving one after the other, then the peer closing.
fn decode(chunks: &[&[u8]]) -> Result<Option<String>, String> {
    let mut decoder = FrameDecoder::new(MAX);
    for chunk in chunks {
        if let Some(body) = decoder.feed(chunk).map_err(|e| e.to_string())? {
            return Ok(Some(body));
        }
    }
    decoder.closed().map_err(|e| e.to_string())?;
    Ok(None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let whole = decode(&[data]);
    let cut = usize::from(cut).min(data.len());
    let split = decode(&[&data[..cut], &data[cut..]]);
    // Bytes after a frame are refused when they arrive with it; split, the frame may be
    // whole before they come. Otherwise the split must not matter.
    if !matches!(&whole, Err(e) if e.contains("bytes after")) {
        assert_eq!(whole, split, "split at {cut}");
    }
    // The blocking reader reads no byte past the frame: it agrees with the decoder on the
    // frame's own bytes.
    let mut reader = data;
    let read = read_frame(&mut reader, MAX).map_err(|e| e.to_string());
    if let Ok(Some(body)) = &read {
        let framed = 8 + body.len();
        assert_eq!(decode(&[&data[..framed]]), Ok(Some(body.clone())));
        if let Ok(request) = Request::parse(body) {
            let again = Request::parse(&request.to_json()).expect("a parsed request re-parses");
            assert_eq!(again, request);
        }
    }
    // The body parser alone, on text that is not framed.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Request::parse(text);
    }
});
