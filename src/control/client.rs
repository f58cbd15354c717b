//! `rgunicornc`: the control socket's command-line client, with gunicornc's
//! options (`-s/--socket`, `-c/--command`, `-j/--json`, `-v/--version`)
//! and an interactive prompt without `-c`. It speaks gunicorn's protocol,
//! so it also drives a gunicorn 27 master. Used by `src/bin/rgunicornc.rs`
//! and by the pip package's `rgunicornc` console script.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{encode, MAX_MESSAGE};

const USAGE: &str = "usage: rgunicornc [-h] [-s SOCKET] [-c COMMAND] [-j] [-v]

rgunicorn control interface (speaks gunicorn's gunicornc protocol)

options:
  -h, --help            show this help message and exit
  -s, --socket SOCKET   Control socket path (default: $XDG_RUNTIME_DIR/gunicorn.ctl,
                        else ~/.gunicorn/gunicorn.ctl)
  -c, --command COMMAND Execute single command and exit
  -j, --json            Output raw JSON (for scripting)
  -v, --version         Show version and exit

Examples:
  rgunicornc -c \"show workers\"
  rgunicornc -s /run/app.ctl -c \"worker add 2\"
  rgunicornc -c \"show stats\" -j";

struct Options {
    socket: PathBuf,
    command: Option<String>,
    json: bool,
}

enum Parsed {
    Run(Options),
    Exit(i32),
}

fn parse_args(argv: &[String]) -> Parsed {
    let mut socket: Option<String> = None;
    let mut command = None;
    let mut json = false;
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Option<String> {
            inline.clone().or_else(|| it.next().cloned()).or_else(|| {
                eprintln!("{USAGE}\nrgunicornc: error: argument {name}: expected one argument");
                None
            })
        };
        match flag {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Parsed::Exit(0);
            }
            "-v" | "--version" => {
                println!("rgunicornc (rgunicorn {})", env!("CARGO_PKG_VERSION"));
                return Parsed::Exit(0);
            }
            "-j" | "--json" => json = true,
            "-s" | "--socket" => match value("-s/--socket") {
                Some(v) => socket = Some(v),
                None => return Parsed::Exit(2),
            },
            "-c" | "--command" => match value("-c/--command") {
                Some(v) => command = Some(v),
                None => return Parsed::Exit(2),
            },
            other => {
                eprintln!("{USAGE}\nrgunicornc: error: unrecognized arguments: {other}");
                return Parsed::Exit(2);
            }
        }
    }
    let socket = match socket {
        Some(s) => super::absolute(&s),
        None => super::default_path(),
    };
    Parsed::Run(Options {
        socket,
        command,
        json,
    })
}

/// Why a command got no answer data.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection failed (the client reconnects once).
    #[error("{0}")]
    Connection(String),
    /// The server answered with an error (the connection is still good).
    #[error("{0}")]
    Server(String),
}

/// A connection to a control socket.
pub struct Client {
    stream: UnixStream,
    next_id: u64,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, SendError> {
        let stream = UnixStream::connect(path).map_err(|e| {
            SendError::Connection(format!("Failed to connect to {}: {e}", path.display()))
        })?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        Ok(Client { stream, next_id: 0 })
    }

    /// Send one command; the answer's `data`, or its `error`.
    pub fn send(&mut self, command: &str) -> Result<Value, SendError> {
        let conn = |what: &str, e: &dyn std::fmt::Display| {
            SendError::Connection(format!("Failed to {what}: {e}"))
        };
        self.next_id += 1;
        let req = json!({"id": self.next_id, "command": command, "args": []});
        self.stream
            .write_all(&encode(&req))
            .map_err(|e| conn("send command", &e))?;
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| conn("read response", &e))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return Err(SendError::Connection(format!("Message too large: {len}")));
        }
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .map_err(|e| conn("read response", &e))?;
        let resp: Value = serde_json::from_slice(&payload)
            .map_err(|e| SendError::Connection(format!("Invalid JSON: {e}")))?;
        if resp.get("status").and_then(Value::as_str) == Some("error") {
            return Err(SendError::Server(
                resp.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown error")
                    .to_string(),
            ));
        }
        Ok(resp.get("data").cloned().unwrap_or(Value::Null))
    }
}

/// The `rgunicornc` command: returns the exit status (0 ok, 1 error, 2
/// usage).
pub fn main(argv: Vec<String>) -> i32 {
    let opts = match parse_args(&argv) {
        Parsed::Run(o) => o,
        Parsed::Exit(code) => return code,
    };
    match &opts.command {
        Some(cmd) => run_one(&opts, cmd),
        None => interactive(&opts),
    }
}

fn run_one(opts: &Options, cmd: &str) -> i32 {
    let result = Client::connect(&opts.socket).and_then(|mut c| c.send(cmd));
    match result {
        Ok(data) => {
            println!("{}", render(cmd, &data, opts.json));
            0
        }
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

fn interactive(opts: &Options) -> i32 {
    let mut client = match Client::connect(&opts.socket) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    println!("Connected to {}", opts.socket.display());
    println!("Type 'help' for available commands, 'quit' to exit.\n");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("rgunicorn> ");
        let _ = std::io::stdout().flush();
        let Some(Ok(line)) = lines.next() else {
            println!();
            return 0;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if matches!(line.to_lowercase().as_str(), "quit" | "exit" | "q") {
            return 0;
        }
        match client.send(line) {
            Ok(data) => println!("{}", render(line, &data, opts.json)),
            Err(e) => {
                println!("Error: {e}");
                // A server error leaves the connection usable; a broken one
                // is tried once more.
                if let SendError::Connection(_) = e {
                    match Client::connect(&opts.socket) {
                        Ok(c) => client = c,
                        Err(_) => {
                            println!("Connection lost. Exiting.");
                            return 1;
                        }
                    }
                }
            }
        }
        println!();
    }
}

/// The answer for people: a table for `show workers`, `key: value` lines
/// otherwise; pretty JSON with `-j`.
pub fn render(cmd: &str, data: &Value, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(data).unwrap_or_default();
    }
    let words: Vec<String> = cmd.split_whitespace().map(str::to_lowercase).collect();
    if words == ["show", "workers"] {
        return workers_table(data);
    }
    match data {
        Value::Null => "OK".to_string(),
        Value::Object(m) if m.is_empty() => "OK".to_string(),
        _ => {
            let mut out = String::new();
            readable(data, 0, &mut out);
            out.trim_end().to_string()
        }
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.0}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn rss(kib: u64) -> String {
    if kib >= 1024 * 1024 {
        format!("{:.1}G", kib as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1}M", kib as f64 / 1024.0)
    }
}

/// PID, AGE, STATE, REQUESTS, IN_FLIGHT, UPTIME, RSS, LAST_BEAT (a gunicorn
/// master's answer has no scoreboard fields: `-` there).
fn workers_table(data: &Value) -> String {
    let workers = data
        .get("workers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if workers.is_empty() {
        return "No workers running".into();
    }
    let header = [
        "PID",
        "AGE",
        "STATE",
        "REQUESTS",
        "IN_FLIGHT",
        "UPTIME",
        "RSS",
        "LAST_BEAT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for w in &workers {
        // A gunicorn master has no state to show (its `booted` stays
        // false in the arbiter).
        rows.push(vec![
            cell(w.get("pid")),
            cell(w.get("age")),
            cell(w.get("state")),
            cell(w.get("requests")),
            cell(w.get("in_flight")),
            w.get("uptime")
                .and_then(Value::as_f64)
                .map(duration)
                .unwrap_or_else(|| "-".into()),
            w.get("rss_kib")
                .and_then(Value::as_u64)
                .map(rss)
                .unwrap_or_else(|| "-".into()),
            w.get("last_heartbeat")
                .and_then(Value::as_f64)
                .map(|s| format!("{s:.2}s ago"))
                .unwrap_or_else(|| "n/a".into()),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    let count = data
        .get("count")
        .and_then(Value::as_u64)
        .unwrap_or(workers.len() as u64);
    out.push_str(&format!("\nTotal: {count} workers"));
    out
}

/// `key: value` lines, nested values indented under their key.
fn readable(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(inner) if !inner.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        readable(v, indent + 2, out);
                    }
                    Value::Array(a) if a.iter().any(|e| e.is_object() || e.is_array()) => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        readable(v, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(v))),
                }
            }
        }
        Value::Array(a) => {
            for e in a {
                match e {
                    Value::Object(_) | Value::Array(_) => {
                        out.push_str(&format!("{pad}-\n"));
                        readable(e, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(e))),
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        Value::Object(m) if m.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_the_columns() {
        let data = json!({"workers": [{"pid": 12, "age": 1, "state": "serving", "requests": 3,
            "in_flight": 0, "uptime": 75.5, "rss_kib": 20480, "last_heartbeat": 0.25}], "count": 1});
        let t = render("show workers", &data, false);
        assert!(
            t.starts_with("PID  AGE  STATE    REQUESTS  IN_FLIGHT  UPTIME  RSS    LAST_BEAT"),
            "{t}"
        );
        assert!(
            t.contains("12   1    serving  3         0          1m15s   20.0M  0.25s ago"),
            "{t}"
        );
        assert!(t.ends_with("Total: 1 workers"));
        // gunicorn's answer (no scoreboard fields).
        let g = render(
            "show workers",
            &json!({"workers": [{"pid": 7, "age": 2, "booted": true,
            "aborted": false, "last_heartbeat": null}], "count": 1}),
            false,
        );
        assert!(g.contains("7    2    -      -"), "{g}");
    }

    #[test]
    fn others_are_key_value() {
        let t = render(
            "show stats",
            &json!({"pid": 5, "uptime": 1.5, "dirty_arbiter_pid": null}),
            false,
        );
        assert!(
            t.contains("pid: 5") && t.contains("uptime: 1.5") && t.contains("dirty_arbiter_pid: -"),
            "{t}"
        );
        assert_eq!(render("reopen", &json!({}), false), "OK");
    }
}
