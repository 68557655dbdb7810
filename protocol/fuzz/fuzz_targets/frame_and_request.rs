//! Any bytes a client may send: the frame reader and the request parser must return an
//! error or a value, never panic, and a parsed request must survive a round trip.
#![no_main]

use lava_protocol::frame::read_frame;
use lava_protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    if let Ok(Some(body)) = read_frame(&mut reader, 1 << 20) {
        if let Ok(request) = Request::parse(&body) {
            let again = Request::parse(&request.to_json()).expect("a parsed request re-parses");
            assert_eq!(again, request);
        }
    }
    // The body parser alone, on text that is not framed.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Request::parse(text);
    }
});
