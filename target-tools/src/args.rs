//! Hand-written argument parsing: long options (`--name value`, `--name=value`) anywhere
//! before `--`, `-h`/`--help`, and positional arguments.

use crate::config::Key;

/// A command-specific option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    pub name: &'static str,
    pub takes_value: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub help: bool,
    /// Settings given as flags, in command-line order (the last one wins).
    pub config: Vec<(Key, String)>,
    /// Command-specific options: name and value (`None` for a switch).
    pub options: Vec<(&'static str, Option<String>)>,
    pub positional: Vec<String>,
}

impl Parsed {
    pub fn option(&self, name: &str) -> Option<Option<&str>> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_deref())
    }

    pub fn switch(&self, name: &str) -> bool {
        self.option(name).is_some()
    }

    /// Settings with the last occurrence of each flag first, as [`crate::config`] wants.
    pub fn config_flags(&self) -> Vec<(Key, String)> {
        self.config.iter().rev().cloned().collect()
    }
}

/// Parses `args` (without the program name). `keys`: the settings this command takes as
/// flags; `opts`: its own options. Errors are usage texts.
pub fn parse(args: &[String], keys: &[Key], opts: &[Opt]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.positional.extend(iter.cloned());
            break;
        }
        if arg == "-h" || arg == "--help" {
            out.help = true;
            continue;
        }
        let Some(long) = arg.strip_prefix("--") else {
            if arg.len() > 1 && arg.starts_with('-') {
                return Err(format!("unknown option {arg:?}"));
            }
            out.positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (long, None),
        };
        let mut value = |takes_value: bool| -> Result<Option<String>, String> {
            match (takes_value, inline.clone()) {
                (false, Some(_)) => Err(format!("option --{name} takes no value")),
                (false, None) => Ok(None),
                (true, Some(v)) => Ok(Some(v)),
                (true, None) => iter
                    .next()
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("option --{name} needs a value")),
            }
        };
        if let Some(key) = Key::from_flag(name).filter(|k| keys.contains(k)) {
            let v = value(true)?.unwrap_or_default();
            out.config.push((key, v));
        } else if let Some(opt) = opts.iter().find(|o| o.name == name) {
            let v = value(opt.takes_value)?;
            out.options.push((opt.name, v));
        } else {
            return Err(format!("unknown option --{name}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    use crate::cli::{FAILED, FORCE};

    #[test]
    fn flags_anywhere_before_double_dash() {
        let p = parse(
            &strings(&[
                "--timeout",
                "5",
                "id",
                "k=v w",
                "--group=g=1",
                "--",
                "--not-a-flag",
                "-h",
            ]),
            &Key::ALL,
            &[],
        )
        .unwrap();
        assert!(!p.help);
        assert_eq!(
            p.config,
            vec![
                (Key::Timeout, "5".to_owned()),
                (Key::Group, "g=1".to_owned())
            ]
        );
        assert_eq!(
            p.positional,
            strings(&["id", "k=v w", "--not-a-flag", "-h"])
        );
    }

    #[test]
    fn last_flag_wins() {
        let p = parse(&strings(&["--role", "a", "--role", "b"]), &Key::ALL, &[]).unwrap();
        assert_eq!(p.config_flags()[0], (Key::Role, "b".to_owned()));
    }

    #[test]
    fn command_options_and_help() {
        let p = parse(
            &strings(&["--failed", "disk full", "-h", "--force"]),
            &[],
            &[FAILED, FORCE],
        )
        .unwrap();
        assert!(p.help);
        assert_eq!(p.option("failed"), Some(Some("disk full")));
        assert!(p.switch("force"));
        assert_eq!(p.option("other"), None);
        // A lone dash is a positional argument (conventionally stdin).
        assert_eq!(parse(&strings(&["-"]), &[], &[]).unwrap().positional, ["-"]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let err =
            |args: &[&str]| parse(&strings(args), &[Key::Role], &[FAILED, FORCE]).unwrap_err();
        assert_eq!(err(&["--bogus"]), "unknown option --bogus");
        assert_eq!(err(&["-x"]), "unknown option \"-x\"");
        assert_eq!(err(&["--failed"]), "option --failed needs a value");
        assert_eq!(err(&["--role"]), "option --role needs a value");
        assert_eq!(err(&["--force=yes"]), "option --force takes no value");
        // A setting this command does not take is unknown.
        assert_eq!(err(&["--host-ip", "1.2.3.4"]), "unknown option --host-ip");
    }
}
