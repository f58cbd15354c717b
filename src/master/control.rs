//! The master's side of the control commands: creating the control socket
//! at start, serving it once per loop turn, and executing each command on
//! the master's thread (so `worker add` calls `nworkers_changed` there, as
//! TTIN does). The socket and its connections are `control::server`'s.

use std::sync::atomic::Ordering;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{json, Value};

use super::{Master, MAX_SLOTS};
use crate::control::commands::{self, Command, CommandError};
use crate::control::server::{ControlServer, StartError};
use crate::log;
use crate::sys::process;
use crate::sys::scoreboard::{monotonic_ms, SlotState};

/// `show config`'s settings (gunicorn's list; those rgunicorn does not
/// have, the dirty arbiter's, are left out).
const CONFIG_KEYS: &[&str] = &[
    "bind",
    "workers",
    "worker_class",
    "threads",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "max_requests",
    "max_requests_jitter",
    "worker_connections",
    "preload_app",
    "daemon",
    "pidfile",
    "proc_name",
    "reload",
    "dirty_workers",
    "dirty_apps",
    "dirty_timeout",
    "control_socket",
    "control_socket_disable",
];

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A setting's Python value as JSON (`str()` for anything else, as gunicorn).
fn py_json(v: &Bound<'_, PyAny>) -> Value {
    if v.is_none() {
        Value::Null
    } else if v.is_instance_of::<PyBool>() {
        Value::Bool(v.is_truthy().unwrap_or(false))
    } else if v.is_instance_of::<PyInt>() {
        v.extract::<i64>().map(Value::from).unwrap_or(Value::Null)
    } else if v.is_instance_of::<PyFloat>() {
        v.extract::<f64>().map(Value::from).unwrap_or(Value::Null)
    } else if v.is_instance_of::<PyString>() {
        Value::String(v.extract().unwrap_or_default())
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        Value::Array(
            v.try_iter()
                .map(|it| it.filter_map(Result::ok).map(|e| py_json(&e)).collect())
                .unwrap_or_default(),
        )
    } else if let Ok(d) = v.cast::<PyDict>() {
        Value::Object(
            d.iter()
                .map(|(k, v)| {
                    (
                        k.str().map(|s| s.to_string()).unwrap_or_default(),
                        py_json(&v),
                    )
                })
                .collect(),
        )
    } else {
        Value::String(v.str().map(|s| s.to_string()).unwrap_or_default())
    }
}

impl Master<'_> {
    /// After the first workers are spawned (gunicorn's order): create the
    /// control socket. Never fatal: a default path that cannot be made
    /// gets one info line, a configured one a warning; a socket a live
    /// master answers on is not taken (except by this master's USR2 child).
    pub(super) fn start_control(&mut self) {
        let Some(configured) = &self.settings.control.path else {
            log::debug("Control socket disabled");
            return;
        };
        let path = crate::control::absolute(configured);
        let is_default = path == crate::control::default_path();
        let mode = self.settings.control.mode;
        // A master started by USR2 takes its parent's socket over.
        match ControlServer::start(&path, mode, self.master_pid != 0) {
            Ok(server) => {
                log::info(&format!("Control socket listening at {}", path.display()));
                self.control = Some(server);
            }
            Err(StartError::InUse(p)) => log::warning(&format!(
                "Control socket {} is in use by another running server; not taking it over, \
                 running without one (give this server its own path with --control-socket)",
                p.display()
            )),
            Err(e) if is_default => log::info(&format!("Control socket not started: {e}")),
            Err(e) => log::warning(&format!("Failed to start control socket: {e}")),
        }
    }

    /// Once per loop turn: accept, read, answer.
    pub(super) fn serve_control(&mut self) {
        let Some(mut control) = self.control.take() else {
            return;
        };
        control.serve(|command, args| self.control_command(command, args));
        self.control = Some(control);
    }

    fn control_command(&mut self, command: &str, args: &[Value]) -> Result<Value, CommandError> {
        let cmd = commands::parse(command, args)?;
        log::debug(&format!("Control command: {command}"));
        let signal_self = |sig: Signal| {
            // Handled by the loop's next turn, as the signal itself.
            let _ = process::kill(Pid::from_raw(self.pid as i32), sig);
        };
        Ok(match cmd {
            Command::ShowAll => self.show_all(),
            Command::ShowWorkers => self.show_workers(),
            Command::ShowDirty => commands::no_dirty(),
            Command::ShowConfig => self.show_config(),
            Command::ShowStats => self.show_stats(),
            Command::ShowListeners => self.show_listeners(),
            Command::WorkerAdd(n) => {
                let old = self.num_workers;
                let new = (old + n).min(MAX_SLOTS);
                self.change_num_workers(new, old)?;
                json!({"added": new - old, "previous": old, "total": new})
            }
            Command::WorkerRemove(n) => {
                let old = self.num_workers;
                let new = old.saturating_sub(n).max(1);
                self.change_num_workers(new, old)?;
                json!({"removed": old - new, "previous": old, "total": new})
            }
            Command::WorkerKill(pid) => {
                // As gunicorn: not a worker is an answer, not a failed command.
                let not_found =
                    || json!({"success": false, "error": format!("Worker {pid} not found")});
                let Ok(pid) = i32::try_from(pid) else {
                    return Ok(not_found());
                };
                let Some(w) = self.workers.get(&pid) else {
                    return Ok(not_found());
                };
                if !w.terminated {
                    log::info(&format!("Worker (pid:{pid}) stopped by a control command"));
                    self.terminate(pid);
                    if let Some(w) = self.workers.get_mut(&pid) {
                        w.cause = Some(crate::observe::metrics::RestartCause::Control);
                    }
                }
                json!({"success": true, "killed": pid})
            }
            Command::Dirty => json!({"success": false, "error": "Dirty arbiter not running"}),
            Command::Reload => {
                signal_self(Signal::SIGHUP);
                json!({"status": "reloading"})
            }
            Command::Reopen => {
                signal_self(Signal::SIGUSR1);
                json!({"status": "reopening"})
            }
            Command::Shutdown { quick, mode } => {
                signal_self(if quick {
                    Signal::SIGINT
                } else {
                    Signal::SIGTERM
                });
                json!({"status": "shutting_down", "mode": mode})
            }
            Command::Help => commands::help(),
        })
    }

    /// `worker add` / `remove`: as TTIN / TTOU, `nworkers_changed` on this
    /// thread; `manage_workers` spawns or stops in the same loop turn. An
    /// exception in the hook is logged and answered as gunicorn's
    /// "Command failed".
    fn change_num_workers(&mut self, new: usize, old: usize) -> Result<(), CommandError> {
        if new == old {
            return Ok(());
        }
        self.set_num_workers(new, Some(old)).map_err(|e| {
            let tb = self.traceback(&e);
            log::error(&format!("Command error\n{tb}"));
            CommandError(format!("Command failed: {e}"))
        })
    }

    fn worker_rows(&self) -> Vec<Value> {
        let now = monotonic_ms();
        let mut rows: Vec<(u64, Value)> = self
            .workers
            .iter()
            .map(|(pid, w)| {
                let slot = self.board.slot(w.slot);
                let beat = slot.heartbeat_ms.load(Ordering::Acquire);
                let state = slot.state();
                let state_name = match state {
                    SlotState::Booting => "booting",
                    SlotState::Serving if w.retiring => "retiring",
                    SlotState::Serving => "serving",
                    SlotState::WantsRetire => "retiring",
                    SlotState::Draining => "draining",
                    SlotState::Free => "exited",
                };
                let row = json!({
                    "pid": pid,
                    "age": w.age,
                    "booted": state != SlotState::Booting,
                    "aborted": w.aborted.is_some(),
                    "last_heartbeat": (beat != 0)
                        .then(|| round2(now.saturating_sub(beat) as f64 / 1000.0)),
                    "state": state_name,
                    "requests": slot.requests.load(Ordering::Relaxed),
                    "in_flight": slot.in_flight.load(Ordering::Relaxed),
                    "connections": slot.connections.load(Ordering::Relaxed),
                    "uptime": round2(w.born.elapsed().as_secs_f64()),
                    "rss_kib": process::rss_bytes(*pid).map(|b| b / 1024),
                });
                (w.age, row)
            })
            .collect();
        rows.sort_by_key(|(age, _)| *age);
        rows.into_iter().map(|(_, r)| r).collect()
    }

    /// gunicorn's fields, plus the scoreboard's: `state`, `requests`,
    /// `in_flight`, `connections`, `uptime` (s), `rss_kib`.
    fn show_workers(&self) -> Value {
        let rows = self.worker_rows();
        json!({"count": rows.len(), "workers": rows})
    }

    fn show_all(&self) -> Value {
        let web: Vec<Value> = self
            .worker_rows()
            .into_iter()
            .map(|r| {
                json!({"pid": r["pid"], "type": "web", "age": r["age"], "booted": r["booted"],
                       "last_heartbeat": r["last_heartbeat"]})
            })
            .collect();
        json!({
            "arbiter": {"pid": self.pid, "type": "arbiter", "role": "master"},
            "web_worker_count": web.len(),
            "web_workers": web,
            "dirty_arbiter": null,
            "dirty_workers": [],
            "dirty_worker_count": 0,
        })
    }

    fn show_stats(&self) -> Value {
        json!({
            "uptime": round2(self.started.elapsed().as_secs_f64()),
            "pid": self.pid,
            "workers_current": self.workers.len(),
            "workers_target": self.num_workers,
            "workers_spawned": self.worker_age,
            "workers_killed": self.workers_killed,
            "reloads": self.reloads,
            "dirty_arbiter_pid": null,
        })
    }

    fn show_listeners(&self) -> Value {
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|l| {
                let kind = match l.socket.local_addr().ok().and_then(|a| a.as_socket()) {
                    Some(std::net::SocketAddr::V4(_)) => "tcp",
                    Some(std::net::SocketAddr::V6(_)) => "tcp6",
                    None => "unix",
                };
                json!({"address": l.to_string(), "fd": l.fd(), "type": kind})
            })
            .collect();
        json!({"count": listeners.len(), "listeners": listeners})
    }

    fn show_config(&self) -> Value {
        let py = self.py;
        Value::Object(
            crate::settings::values(py, &self.cfg, CONFIG_KEYS)
                .into_iter()
                .map(|(k, v)| (k, py_json(&v)))
                .collect(),
        )
    }
}
