//! The command line, built from the settings table with clap and made to
//! behave like gunicorn's argparse parser: unambiguous prefixes of long
//! flags (`--bac`), repeatable `append` flags, `--flag=value`, argparse's
//! error messages and exit code 2.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};

use crate::table::{Action, CliType, Setting, SETTINGS};

/// What the user typed for one setting, before argparse's `type=` and the
/// validator run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliValue {
    Str(String),
    /// A flag with `type=int` or `auto_int`: converted by Python's `int()`.
    Int(String, CliType),
    Bool(bool),
    List(Vec<String>),
}

/// One parsed command line (argv, or `GUNICORN_CMD_ARGS`).
#[derive(Debug, Default, Clone)]
pub struct ParsedArgs {
    /// (index in SETTINGS, value) for every flag given, in table order.
    pub values: Vec<(usize, CliValue)>,
    /// Positional arguments: the first is APP_MODULE.
    pub positionals: Vec<String>,
}

impl ParsedArgs {
    pub fn get(&self, name: &str) -> Option<&CliValue> {
        self.values
            .iter()
            .find(|(i, _)| SETTINGS[*i].name == name)
            .map(|(_, v)| v)
    }
}

/// Why parsing stopped.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--help`: the text to print on stdout, exit 0.
    #[error("{0}")]
    Help(String),
    /// `--version`, exit 0.
    #[error("version")]
    Version,
    /// argparse's error: usage line and `prog: error: message`, exit 2.
    #[error("{usage}\n{prog}: error: {message}\n")]
    Usage {
        usage: String,
        prog: String,
        message: String,
    },
}

pub fn usage_line(prog: &str) -> String {
    format!("usage: {prog} [OPTIONS] [APP_MODULE]")
}

/// The flag spellings of a setting joined as argparse names it in errors
/// (`-w/--workers`).
fn display_flags(s: &Setting) -> String {
    s.flags.join("/")
}

fn help_text(s: &Setting) -> String {
    let default = match s.default {
        crate::table::DefaultValue::None => "None".to_string(),
        crate::table::DefaultValue::Bool(b) => if b { "True" } else { "False" }.to_string(),
        crate::table::DefaultValue::Int(i) => i.to_string(),
        crate::table::DefaultValue::Str(v) => v.to_string(),
        crate::table::DefaultValue::StrList(l) => format!("{l:?}").replace('"', "'"),
        crate::table::DefaultValue::PyExpr(e) => e.to_string(),
        crate::table::DefaultValue::Computed(f) => match f() {
            crate::computed::Computed::Int(i) => i.to_string(),
            crate::computed::Computed::Str(v) => v,
            crate::computed::Computed::StrList(l) => format!("{l:?}").replace('"', "'"),
        },
        crate::table::DefaultValue::Hook { .. } => String::new(),
    };
    format!("{} [{}]", s.short, default)
}

/// The clap command for `prog`, one argument per setting that has flags.
pub fn command(prog: &str, version: &str) -> Command {
    let mut cmd = Command::new(prog.to_string())
        .override_usage(format!("{prog} [OPTIONS] [APP_MODULE]"))
        .version(version.to_string())
        .disable_version_flag(true)
        .infer_long_args(true)
        .args_override_self(true)
        .help_template("usage: {usage}\n\noptions:\n{options}\n")
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("show program's version number and exit"),
        )
        .arg(
            Arg::new("args")
                .num_args(0..)
                .action(ArgAction::Append)
                .hide(true),
        );
    for s in SETTINGS.iter().filter(|s| !s.flags.is_empty()) {
        let mut arg = Arg::new(s.name).help(help_text(s));
        let mut longs = s.flags.iter().filter_map(|f| f.strip_prefix("--"));
        if let Some(first) = longs.next() {
            arg = arg.long(first);
        }
        for alias in longs {
            arg = arg.visible_alias(alias);
        }
        if let Some(short) = s
            .flags
            .iter()
            .find(|f| f.len() == 2 && !f.starts_with("--"))
        {
            arg = arg.short(short.chars().nth(1).unwrap());
        }
        if let Some(meta) = s.meta {
            arg = arg.value_name(meta);
        }
        arg = match s.action {
            Action::StoreTrue | Action::StoreFalse => arg.action(ArgAction::SetTrue),
            Action::Append => arg
                .action(ArgAction::Append)
                .num_args(1)
                .allow_negative_numbers(true),
            Action::StoreOptional(constant) => arg
                .action(ArgAction::Set)
                .num_args(0..=1)
                .default_missing_value(constant),
            Action::Store | Action::FileOnly => arg
                .action(ArgAction::Set)
                .num_args(1)
                .allow_negative_numbers(true),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// argparse's "ambiguous option" check, which clap's prefix inference
/// reports only as an unknown argument.
fn check_ambiguous(args: &[String], prog: &str) -> Result<(), CliError> {
    let longs: Vec<&str> = SETTINGS
        .iter()
        .flat_map(|s| s.flags.iter().copied())
        .chain(["--version", "--help"])
        .filter(|f| f.starts_with("--"))
        .collect();
    for arg in args {
        if arg == "--" {
            break;
        }
        if !arg.starts_with("--") {
            continue;
        }
        let name = arg.split('=').next().unwrap_or(arg);
        if longs.contains(&name) {
            continue;
        }
        let matches: Vec<&str> = longs
            .iter()
            .copied()
            .filter(|l| l.starts_with(name))
            .collect();
        if matches.len() > 1 {
            return Err(CliError::Usage {
                usage: usage_line(prog),
                prog: prog.to_string(),
                message: format!(
                    "ambiguous option: {name} could match {}",
                    matches.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Parse `args` (without the program name) as gunicorn's parser would.
pub fn parse(prog: &str, version: &str, args: &[String]) -> Result<ParsedArgs, CliError> {
    check_ambiguous(args, prog)?;
    let argv: Vec<OsString> = std::iter::once(OsString::from(prog))
        .chain(args.iter().map(OsString::from))
        .collect();
    let usage_err = |message: String| CliError::Usage {
        usage: usage_line(prog),
        prog: prog.to_string(),
        message,
    };
    let matches = match command(prog, version).try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            let arg = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(s)) => s.clone(),
                _ => String::new(),
            };
            // clap names the argument as "--workers <INT>"; argparse as "-w/--workers".
            let flag = arg.split_whitespace().next().unwrap_or("").to_string();
            let named = SETTINGS
                .iter()
                .find(|s| {
                    s.flags
                        .iter()
                        .any(|f| *f == flag || flag.starts_with(&format!("{f}=")))
                })
                .map(display_flags)
                .unwrap_or(flag.clone());
            return Err(match e.kind() {
                ErrorKind::DisplayHelp => CliError::Help(e.render().to_string()),
                ErrorKind::UnknownArgument => usage_err(format!("unrecognized arguments: {arg}")),
                ErrorKind::InvalidValue
                | ErrorKind::NoEquals
                | ErrorKind::TooFewValues
                | ErrorKind::WrongNumberOfValues => {
                    usage_err(format!("argument {named}: expected one argument"))
                }
                _ => usage_err(
                    e.render()
                        .to_string()
                        .trim()
                        .trim_start_matches("error: ")
                        .to_string(),
                ),
            });
        }
    };
    if matches.get_flag("version") {
        return Err(CliError::Version);
    }
    let mut parsed = ParsedArgs {
        positionals: matches
            .get_many::<String>("args")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        ..Default::default()
    };
    for (i, s) in SETTINGS.iter().enumerate() {
        if s.flags.is_empty() || matches.value_source(s.name) != Some(ValueSource::CommandLine) {
            continue;
        }
        let value = match s.action {
            Action::StoreTrue => CliValue::Bool(true),
            Action::StoreFalse => CliValue::Bool(false),
            Action::Append => CliValue::List(
                matches
                    .get_many::<String>(s.name)
                    .unwrap()
                    .cloned()
                    .collect(),
            ),
            _ => {
                let v = matches
                    .get_one::<String>(s.name)
                    .cloned()
                    .unwrap_or_default();
                match s.cli_type {
                    CliType::Str => CliValue::Str(v),
                    ty => CliValue::Int(v, ty),
                }
            }
        };
        parsed.values.push((i, value));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<ParsedArgs, CliError> {
        parse(
            "rgunicorn",
            "0",
            &args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_clap_command_is_consistent() {
        command("rgunicorn", "0").debug_assert();
    }

    #[test]
    fn prefixes_short_flags_equals_and_appends() {
        let a = p(&[
            "--bac",
            "10",
            "-w3",
            "--timeout=7",
            "-b",
            "a:1",
            "-b",
            "b:2",
            "app:app",
        ])
        .unwrap();
        assert_eq!(
            a.get("backlog"),
            Some(&CliValue::Int("10".into(), CliType::Int))
        );
        assert_eq!(
            a.get("workers"),
            Some(&CliValue::Int("3".into(), CliType::Int))
        );
        assert_eq!(
            a.get("timeout"),
            Some(&CliValue::Int("7".into(), CliType::Int))
        );
        assert_eq!(
            a.get("bind"),
            Some(&CliValue::List(vec!["a:1".into(), "b:2".into()]))
        );
        assert_eq!(a.positionals, vec!["app:app".to_string()]);
    }

    #[test]
    fn a_repeated_store_flag_keeps_the_last_value() {
        let a = p(&["-w", "2", "-w", "5"]).unwrap();
        assert_eq!(
            a.get("workers"),
            Some(&CliValue::Int("5".into(), CliType::Int))
        );
    }

    #[test]
    fn booleans_and_store_const() {
        let a = p(&["--preload", "--no-sendfile", "-D"]).unwrap();
        assert_eq!(a.get("preload_app"), Some(&CliValue::Bool(true)));
        assert_eq!(a.get("sendfile"), Some(&CliValue::Bool(false)));
        assert_eq!(a.get("daemon"), Some(&CliValue::Bool(true)));
    }

    #[test]
    fn bare_proxy_protocol_means_auto_and_swallows_the_next_word() {
        let a = p(&["--proxy-protocol"]).unwrap();
        assert_eq!(a.get("proxy_protocol"), Some(&CliValue::Str("auto".into())));
        let a = p(&["--proxy-protocol", "app:app"]).unwrap();
        assert_eq!(
            a.get("proxy_protocol"),
            Some(&CliValue::Str("app:app".into()))
        );
        assert!(a.positionals.is_empty());
    }

    #[test]
    fn aliases_work() {
        let a = p(&["--log-file", "x.log", "--paster", "p.ini"]).unwrap();
        assert_eq!(a.get("errorlog"), Some(&CliValue::Str("x.log".into())));
        assert_eq!(a.get("paste"), Some(&CliValue::Str("p.ini".into())));
    }

    #[test]
    fn unknown_and_ambiguous_flags_are_usage_errors() {
        match p(&["-q"]) {
            Err(CliError::Usage { message, .. }) => {
                assert_eq!(message, "unrecognized arguments: -q")
            }
            other => panic!("{other:?}"),
        }
        match p(&["--work", "3"]) {
            Err(CliError::Usage { message, .. }) => {
                assert!(
                    message.starts_with("ambiguous option: --work could match --workers"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        match p(&["-w"]) {
            Err(CliError::Usage { message, .. }) => {
                assert_eq!(message, "argument -w/--workers: expected one argument")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_lists_every_flag() {
        let Err(CliError::Help(text)) = p(&["--help"]) else {
            panic!()
        };
        for s in SETTINGS {
            for f in s.flags {
                assert!(text.contains(f), "{f} missing from --help");
            }
        }
    }

    #[test]
    fn version_flag() {
        assert!(matches!(p(&["-v"]), Err(CliError::Version)));
        assert!(matches!(p(&["--version"]), Err(CliError::Version)));
    }
}
