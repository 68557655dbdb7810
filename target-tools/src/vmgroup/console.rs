//! A VM's console: the output of its last `launch_with` command, copied to a log file as it
//! comes, and watched for the VM's shell prompt.

use std::io::{Read, Write};

/// Finds `needle` in a stream read in arbitrary pieces (a match may span two pieces).
#[derive(Debug)]
pub struct PromptWatch {
    needle: Vec<u8>,
    /// The end of what was fed so far that could still be the start of a match.
    tail: Vec<u8>,
    seen: bool,
}

impl PromptWatch {
    pub fn new(prompt: &str) -> Self {
        PromptWatch {
            needle: prompt.as_bytes().to_vec(),
            tail: Vec::new(),
            seen: prompt.is_empty(),
        }
    }

    /// Feeds a piece of output; returns true the first time the prompt is complete.
    pub fn feed(&mut self, piece: &[u8]) -> bool {
        if self.seen {
            return false;
        }
        self.tail.extend_from_slice(piece);
        if self
            .tail
            .windows(self.needle.len())
            .any(|w| w == self.needle.as_slice())
        {
            self.seen = true;
            self.tail = Vec::new();
            return true;
        }
        let keep = self.needle.len().saturating_sub(1);
        if self.tail.len() > keep {
            self.tail.drain(..self.tail.len() - keep);
        }
        false
    }

    #[cfg(test)]
    pub fn seen(&self) -> bool {
        self.seen
    }
}

/// Copies `console` to `log` until the end of the stream, calling `on_prompt` once when the
/// prompt has appeared. Returns the last bytes of the console (for error messages).
pub fn follow(
    mut console: impl Read,
    log: &mut dyn Write,
    mut watch: PromptWatch,
    on_prompt: &mut dyn FnMut(),
) -> Vec<u8> {
    const LAST: usize = 2048;
    let mut buf = [0u8; 8192];
    let mut last = Vec::new();
    loop {
        let n = match console.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let piece = &buf[..n];
        // A log that cannot be written must not stop the VM: keep reading.
        let _ = log.write_all(piece).and_then(|()| log.flush());
        last.extend_from_slice(piece);
        if last.len() > LAST {
            last.drain(..last.len() - LAST);
        }
        if watch.feed(piece) {
            on_prompt();
        }
    }
    last
}

/// The last non-empty line of console output, cleaned of control characters, for a message.
pub fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .split(['\n', '\r'])
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
                .trim()
                .to_owned()
        })
        .rfind(|l| !l.is_empty())
        .map(|l| l.chars().take(160).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_across_pieces() {
        let mut w = PromptWatch::new("lava-guest# ");
        assert!(!w.feed(b"booting...\nlava-gu"));
        assert!(!w.seen());
        assert!(w.feed(b"est# \n"));
        assert!(w.seen());
        // Reported once.
        assert!(!w.feed(b"lava-guest# "));
    }

    #[test]
    fn prompt_in_one_byte_pieces() {
        let mut w = PromptWatch::new("ab#");
        let mut hits = 0;
        for b in b"xxaab#yy" {
            hits += w.feed(&[*b]) as usize;
        }
        assert_eq!(hits, 1);
    }

    #[test]
    fn empty_prompt_counts_as_seen() {
        assert!(PromptWatch::new("").seen());
    }

    #[test]
    fn follow_copies_and_reports() {
        let console: &[u8] = b"line 1\r\nroot@vm:~# \nbye\n";
        let mut log = Vec::new();
        let mut prompts = 0;
        let last = follow(
            console,
            &mut log,
            PromptWatch::new("root@vm:~# "),
            &mut || prompts += 1,
        );
        assert_eq!(log, console);
        assert_eq!(prompts, 1);
        assert_eq!(last_line(&last).as_deref(), Some("bye"));
        assert_eq!(
            last_line(b"\x1b[2Jpanic: x\n\n").as_deref(),
            Some("[2Jpanic: x")
        );
        assert_eq!(last_line(b"\n \n"), None);
    }
}
