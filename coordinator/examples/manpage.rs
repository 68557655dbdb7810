//! Writes the lava-coordinator(1) man page (roff) to standard output, generated from the real
//! command line definition, so the page always lists the options and configuration keys that
//! the binary accepts. `packaging/build-deb.sh` runs it:
//!
//!     cargo run --release -p lava-coordinator --example manpage > lava-coordinator.1

use std::io::Write;

use clap::CommandFactory;
use lava_coordinator::config::Cli;

const DESCRIPTION: &str = "An event-driven, drop-in replacement for LAVA's MultiNode \
coordinator. It reads LAVA's JSON configuration file, listens on 0.0.0.0:3079 unless told \
otherwise, serves every connection at once and keeps its groups in a SQLite state file, so a \
restart fails no job.";

/// Sections after the generated ones: the package's files and where to read more.
const FILES: &str = r#".SH FILES
.TP
.I /etc/lava-coordinator/lava-coordinator.conf
LAVA's configuration file (JSON), also read by the dispatchers on the same machine.
.TP
.I /etc/lava-coordinator/lava-coordinator
.TQ
.I /etc/default/lava-coordinator
Environment of lava-coordinator.service: LOGLEVEL, LAVA_COORDINATOR_ARGS.
.TP
.I /var/lib/lava-coordinator/state.db
The state file used by lava-coordinator.service.
.TP
.I /var/log/lava-coordinator/lava-coordinator.log
The log of lava-coordinator.service, rotated by logrotate.
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1);
/usr/share/doc/lava-multinode-coordinator/
"#;

/// Preformatted text as a roff no-fill block.
fn no_fill(text: &str) -> String {
    let mut out = String::from(".nf\n");
    for line in text.lines() {
        let line = line.replace('\\', "\\e");
        if line.starts_with('.') || line.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(".fi\n");
    out
}

fn main() -> std::io::Result<()> {
    let command = Cli::command().long_about(DESCRIPTION);
    let after_help = command
        .get_after_long_help()
        .or(command.get_after_help())
        .map(|text| text.to_string());
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    if command.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    if let Some(text) = after_help {
        page.extend_from_slice(b".SH CONFIGURATION\n");
        page.extend_from_slice(no_fill(&text).as_bytes());
    }
    page.extend_from_slice(FILES.as_bytes());
    man.render_version_section(&mut page)?;
    std::io::stdout().write_all(&page)
}
