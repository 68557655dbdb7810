//! JSON text as Python's `json.dumps` writes it: `", "` and `": "` separators and every
//! non-ASCII character escaped as `\uXXXX`. LAVA's peers count the 8-hex length in
//! characters and bytes alike, which only holds for ASCII text.

use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter, Serializer};
use std::io::{self, Write};

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        // serde_json's escapes already match Python's (\n, \t, \", \\, \u00XX).
        serde_json::ser::CompactFormatter.write_char_escape(w, escape)
    }
}

/// Serialises `value` as ASCII-only JSON in Python's default layout.
pub fn to_ascii_string<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(64);
    let mut ser = Serializer::with_formatter(&mut out, PythonFormatter);
    // Serialising plain data (strings, maps, numbers) into a Vec cannot fail.
    if value.serialize(&mut ser).is_err() {
        return String::from("null");
    }
    // Every byte written is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        let v =
            json!({"response": "ack", "message": {"a": [1, 2.5, null, true], "b": "x\ny\"é😀"}});
        assert_eq!(
            to_ascii_string(&v),
            r#"{"response": "ack", "message": {"a": [1, 2.5, null, true], "b": "x\ny\"\u00e9\ud83d\ude00"}}"#
        );
    }

    #[test]
    fn round_trips_non_ascii() {
        let v = json!({"k": "ünïcødé ✓ 𝄞", "ctl": "\u{1}\u{7f}"});
        let text = to_ascii_string(&v);
        assert!(text.is_ascii());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), v);
    }
}
