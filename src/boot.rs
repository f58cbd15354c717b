//! What a worker process's life hands across the layers: how its boot
//! fails (the error the loaders return and the exit status it becomes at
//! the fork boundary, gunicorn's, which tell the master to halt), how its
//! serving ends, and what its signals run.

/// A worker could not boot (`post_fork` raised, the import failed with an
/// exception, a thread would not start).
pub const WORKER_BOOT_ERROR: i32 = 3;
/// The app object is not where the app URI says.
pub const APP_LOAD_ERROR: i32 = 4;

/// Why a worker's boot failed. The reason is already logged where it was
/// found; the worker's entry only turns it into its exit status, after
/// "Worker exiting" and `worker_exit`, as gunicorn's `spawn_worker` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// Exit status [`WORKER_BOOT_ERROR`].
    Worker,
    /// Exit status [`APP_LOAD_ERROR`].
    AppLoad,
}

impl BootError {
    /// The worker's exit status.
    pub fn status(self) -> i32 {
        match self {
            BootError::Worker => WORKER_BOOT_ERROR,
            BootError::AppLoad => APP_LOAD_ERROR,
        }
    }
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootError::Worker => "the worker failed to boot",
            BootError::AppLoad => "the app failed to load",
        })
    }
}

impl std::error::Error for BootError {}

/// Why a worker stopped before it drained.
#[derive(Debug)]
pub enum ServeError {
    /// The app could not be made; the reason is logged.
    Boot(BootError),
    Io(std::io::Error),
}

impl From<std::io::Error> for ServeError {
    fn from(e: std::io::Error) -> Self {
        ServeError::Io(e)
    }
}

impl From<BootError> for ServeError {
    fn from(e: BootError) -> Self {
        ServeError::Boot(e)
    }
}

/// What the worker's signal thread does on a quick stop (INT/QUIT: the
/// `worker_int` hook) or an abort (ABRT on timeout: `worker_abort`);
/// both then run `worker_exit` and leave the process.
pub struct SignalHooks {
    pub on_quit: Box<dyn Fn() + Send>,
    pub on_abort: Box<dyn Fn() + Send>,
    /// TERM, before the drain starts: a Python-level SIGTERM handler that
    /// the app or a hook installed (it wraps the worker's own, as under
    /// gunicorn) is called.
    pub on_term: Box<dyn Fn() + Send>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_gunicorns() {
        assert_eq!(BootError::Worker.status(), 3);
        assert_eq!(BootError::AppLoad.status(), 4);
    }
}
