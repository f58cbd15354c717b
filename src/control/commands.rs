//! The control commands: parsing a request into a [`Command`] with
//! gunicorn's error texts (`Invalid argument: Unknown command: x`), and the
//! `help` table. Executing them is the master's (`master/control.rs`, on its
//! thread); formatting them for people is the client's.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    ShowAll,
    ShowWorkers,
    ShowDirty,
    ShowConfig,
    ShowStats,
    ShowListeners,
    /// `worker add [N]`: N as gunicorn takes it, at least 1.
    WorkerAdd(usize),
    WorkerRemove(usize),
    WorkerKill(i64),
    /// `dirty add|remove [N]`: there is no dirty arbiter in rgunicorn.
    Dirty,
    Reload,
    Reopen,
    /// `shutdown [graceful|quick]`: true for quick (INT), else TERM.
    Shutdown {
        quick: bool,
        mode: String,
    },
    Help,
}

/// A command that failed: the text of gunicorn's error answer.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CommandError(pub String);

impl From<String> for CommandError {
    fn from(message: String) -> Self {
        CommandError(message)
    }
}

impl From<&str> for CommandError {
    fn from(message: &str) -> Self {
        CommandError(message.to_string())
    }
}

/// Python's `int()` error text, which gunicorn's answer carries.
fn int(s: &str) -> Result<i64, CommandError> {
    s.trim().parse::<i64>().map_err(|_| {
        format!("Invalid argument: invalid literal for int() with base 10: '{s}'").into()
    })
}

/// `max(1, int(n))`, gunicorn's count for `worker add` and `remove`.
fn count(args: &[String]) -> Result<usize, CommandError> {
    Ok(match args.first() {
        Some(a) => int(a)?.max(1) as usize,
        None => 1,
    })
}

/// Parse `command` (words split on whitespace) followed by `args` (each
/// turned into its text, as gunicorn's `str(a)`).
pub fn parse(command: &str, args: &[Value]) -> Result<Command, CommandError> {
    let mut parts: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    parts.extend(args.iter().map(|a| match a {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }));
    let Some((cmd, rest)) = parts.split_first() else {
        return Err("Empty command".into());
    };
    let invalid = |m: String| Err(CommandError(format!("Invalid argument: {m}")));
    let sub = |i: usize| rest.get(i).map(|s| s.to_lowercase());
    match cmd.to_lowercase().as_str() {
        "show" => match sub(0).as_deref() {
            None => {
                invalid("Missing show target (all|workers|dirty|config|stats|listeners)".into())
            }
            Some("all") => Ok(Command::ShowAll),
            Some("workers") => Ok(Command::ShowWorkers),
            Some("dirty") => Ok(Command::ShowDirty),
            Some("config") => Ok(Command::ShowConfig),
            Some("stats") => Ok(Command::ShowStats),
            Some("listeners") => Ok(Command::ShowListeners),
            Some(t) => invalid(format!("Unknown show target: {t}")),
        },
        "worker" => match sub(0).as_deref() {
            None => invalid("Missing worker action (add|remove|kill)".into()),
            Some("add") => Ok(Command::WorkerAdd(count(&rest[1..])?)),
            Some("remove") => Ok(Command::WorkerRemove(count(&rest[1..])?)),
            Some("kill") => match rest.get(1) {
                None => invalid("Missing PID for worker kill".into()),
                Some(pid) => Ok(Command::WorkerKill(int(pid)?)),
            },
            Some(a) => invalid(format!("Unknown worker action: {a}")),
        },
        "dirty" => match sub(0).as_deref() {
            None => invalid("Missing dirty action (add|remove)".into()),
            Some("add" | "remove") => {
                count(&rest[1..])?;
                Ok(Command::Dirty)
            }
            Some(a) => invalid(format!("Unknown dirty action: {a}")),
        },
        "reload" => Ok(Command::Reload),
        "reopen" => Ok(Command::Reopen),
        "shutdown" => {
            let mode = rest.first().cloned().unwrap_or_else(|| "graceful".into());
            Ok(Command::Shutdown {
                quick: mode == "quick",
                mode,
            })
        }
        "help" => Ok(Command::Help),
        other => invalid(format!("Unknown command: {other}")),
    }
}

/// `help`'s answer: every command and what it does.
pub fn help() -> Value {
    json!({"commands": {
        "show all": "Show all processes (arbiter, web workers, dirty workers)",
        "show workers": "List HTTP workers with their status",
        "show dirty": "List dirty workers and apps",
        "show config": "Show current effective configuration",
        "show stats": "Show server statistics",
        "show listeners": "Show bound sockets",
        "worker add [N]": "Spawn N workers (default 1)",
        "worker remove [N]": "Remove N workers (default 1)",
        "worker kill <PID>": "Gracefully terminate specific worker",
        "dirty add [N]": "Spawn N dirty workers (default 1)",
        "dirty remove [N]": "Remove N dirty workers (default 1)",
        "reload": "Graceful reload (HUP)",
        "reopen": "Reopen log files (USR1)",
        "shutdown [graceful|quick]": "Shutdown server (TERM/INT)",
        "help": "Show this help message",
    }})
}

/// `show dirty`: rgunicorn has no dirty arbiter.
pub fn no_dirty() -> Value {
    json!({"enabled": false, "pid": null, "workers": [], "apps": []})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_gunicorn() {
        assert_eq!(parse("show workers", &[]), Ok(Command::ShowWorkers));
        assert_eq!(parse("SHOW  Stats", &[]), Ok(Command::ShowStats));
        assert_eq!(parse("worker add", &[]), Ok(Command::WorkerAdd(1)));
        assert_eq!(parse("worker add 3", &[]), Ok(Command::WorkerAdd(3)));
        assert_eq!(parse("worker add 0", &[]), Ok(Command::WorkerAdd(1)));
        assert_eq!(
            parse("worker", &[json!("remove"), json!(2)]),
            Ok(Command::WorkerRemove(2))
        );
        assert_eq!(parse("worker kill 42", &[]), Ok(Command::WorkerKill(42)));
        assert_eq!(parse("", &[]), Err("Empty command".into()));
        assert_eq!(
            parse("frobnicate", &[]),
            Err("Invalid argument: Unknown command: frobnicate".into())
        );
        assert_eq!(
            parse("worker add x", &[]),
            Err("Invalid argument: invalid literal for int() with base 10: 'x'".into())
        );
        assert_eq!(
            parse("shutdown quick", &[]),
            Ok(Command::Shutdown {
                quick: true,
                mode: "quick".into()
            })
        );
        assert_eq!(parse("dirty add", &[]), Ok(Command::Dirty));
    }
}
