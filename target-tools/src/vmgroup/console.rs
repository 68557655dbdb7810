//! A VM's console: the last `launch_with` command runs on a pseudo-terminal whose master side
//! the launcher reads (every byte to the VM's log) and writes (what the session types).
//!
//! The terminal is raw (no echo, no line editing, no CR/LF translation on the host side), so
//! that what the VM's program prints and what the launcher types pass unchanged; the
//! program's own terminal handling (qemu's `-serial stdio`, ssh, a guest's tty) applies. The
//! program gets it as its controlling terminal in a session of its own (its process group is
//! the launcher's handle to kill it and whatever it started).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;

use nix::pty::openpty;
use nix::sys::termios::{self, SetArg};

/// Columns of the console: wide, so that guests wrap long lines late (LAVA's consoles are
/// often 80 columns; the session does not depend on either).
const COLUMNS: u16 = 200;

/// Both sides of a fresh pseudo-terminal.
pub struct Pty {
    pub master: File,
    slave: OwnedFd,
}

impl Pty {
    pub fn open() -> std::io::Result<Pty> {
        let size = nix::pty::Winsize {
            ws_row: 50,
            ws_col: COLUMNS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).map_err(std::io::Error::from)?;
        let mut mode = termios::tcgetattr(&pty.slave).map_err(std::io::Error::from)?;
        termios::cfmakeraw(&mut mode);
        termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &mode).map_err(std::io::Error::from)?;
        Ok(Pty {
            master: File::from(pty.master),
            slave: pty.slave,
        })
    }

    /// Makes the terminal `cmd`'s standard input, output and error and its controlling
    /// terminal, in a new session. The launcher's copy of the slave side must be dropped
    /// after the spawn (`Pty::into_master`), or the console never reports its end.
    pub fn attach(&self, cmd: &mut Command) -> std::io::Result<()> {
        let io = || -> std::io::Result<Stdio> { Ok(Stdio::from(self.slave.try_clone()?)) };
        cmd.stdin(io()?).stdout(io()?).stderr(io()?);
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid and ioctl are async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok(())
    }

    /// The master side alone: the slave's last copy in this process goes.
    pub fn into_master(self) -> File {
        drop(self.slave);
        self.master
    }
}

/// What the reader thread sees on a console.
pub enum Output {
    Bytes(Vec<u8>),
    /// The program and everything holding the terminal have gone.
    Closed,
}

/// Reads the console until it closes, sending every piece to `tx` (wrapped by `wrap`).
pub fn read_into<E: Send + 'static>(
    mut master: File,
    tx: Sender<E>,
    wrap: impl Fn(Output) -> E + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(wrap(Output::Bytes(buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: the last holder of the slave side closed it.
                Err(_) => break,
            }
        }
        let _ = tx.send(wrap(Output::Closed));
    })
}

/// Types `text` on the console.
pub fn type_text(master: &mut File, text: &str) -> std::io::Result<()> {
    master.write_all(text.as_bytes())?;
    master.flush()
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
    fn last_line_is_clean() {
        assert_eq!(last_line(b"line 1\r\nbye\n").as_deref(), Some("bye"));
        assert_eq!(
            last_line(b"\x1b[2Jpanic: x\n\n").as_deref(),
            Some("[2Jpanic: x")
        );
        assert_eq!(last_line(b"\n \n"), None);
    }

    /// A program on the terminal sees a tty and gets what is typed; its output comes back.
    #[test]
    fn a_program_on_the_pty_reads_what_is_typed() {
        let pty = Pty::open().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "test -t 0 && read line && echo \"got:$line\""]);
        pty.attach(&mut cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let mut master = pty.into_master();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = read_into(master.try_clone().unwrap(), tx, |o| o);
        type_text(&mut master, "hello\n").unwrap();
        let mut seen = Vec::new();
        while let Output::Bytes(b) = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap() {
            seen.extend(b);
        }
        let status = child.wait().unwrap();
        reader.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&seen), "got:hello\n");
        assert!(status.success());
    }
}
