//! The received data as test writers see it: one `sender:key=value` line per pair, printed
//! and written to the cache file (LAVA's `/tmp/lava_multi_node_cache.txt`).

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::error::Error;

/// A received value as text: strings as they are, `null` as nothing, numbers, booleans,
/// lists and objects as their JSON text. Line breaks are written `\n` / `\r` so that every
/// pair stays on one line.
pub fn value_text(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains(['\n', '\r']) {
        text.replace('\n', "\\n").replace('\r', "\\r")
    } else {
        text
    }
}

/// The lines of a `lava_wait`/`lava_wait_all` reply's `message` (`{sender: {key: value}}`),
/// in the coordinator's order. A sender whose data is not an object has no pairs.
pub fn lines(message: &Value) -> Vec<String> {
    let Value::Object(senders) = message else {
        return Vec::new();
    };
    senders
        .iter()
        .filter_map(|(sender, data)| data.as_object().map(|pairs| (sender, pairs)))
        .flat_map(|(sender, pairs)| {
            pairs
                .iter()
                .map(move |(key, value)| format!("{sender}:{key}={}", value_text(value)))
        })
        .collect()
}

/// The lines as one text, each ending with a newline.
pub fn text(lines: &[String]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Replaces the cache file with `lines`, atomically (a reader never sees half a file).
pub fn write(path: &Path, lines: &[String]) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::Local(format!("cannot write cache file {}: {e}", path.display()))
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = Path::new(&tmp);
    let result = std::fs::File::create(tmp)
        .and_then(|mut f| f.write_all(text(lines).as_bytes()))
        .and_then(|()| std::fs::rename(tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    result.map_err(fail)
}

/// Removes a stale cache file before a wait, as LAVA's helpers do, so that a failed wait
/// leaves no old data behind.
pub fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Local(format!(
            "cannot remove cache file {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_line_per_pair_in_order() {
        let message = json!({
            "10": {"ip": "192.168.0.2", "note": "a b  c=d é"},
            "9": {},
            "11": {"n": 3, "f": 2.5, "z": null, "t": true, "l": [1, "x"], "o": {"a": 1}, "e": ""},
            "12": "sync-id"
        });
        assert_eq!(
            lines(&message),
            [
                "10:ip=192.168.0.2",
                "10:note=a b  c=d é",
                "11:n=3",
                "11:f=2.5",
                "11:z=",
                "11:t=true",
                "11:l=[1,\"x\"]",
                "11:o={\"a\":1}",
                "11:e=",
            ]
        );
        assert!(lines(&json!(null)).is_empty());
        assert!(lines(&json!({})).is_empty());
    }

    #[test]
    fn line_breaks_stay_on_one_line() {
        assert_eq!(value_text(&json!("a\nb\r")), "a\\nb\\r");
    }

    #[test]
    fn cache_file_is_replaced_and_removed() {
        let path = std::env::temp_dir().join(format!("lava-mn-cache-test-{}", std::process::id()));
        std::fs::write(&path, "old:line=1\nmore\n").unwrap();
        write(&path, &["a:b=c".to_owned(), "a:d=".to_owned()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a:b=c\na:d=\n");
        write(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
        let err = write(Path::new("/nonexistent-dir/cache"), &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/cache"), "{err}");
    }
}
