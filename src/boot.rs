//! How a worker's boot fails: the error the loaders return and the exit
//! status it becomes at the fork boundary (gunicorn's, which tell the
//! master to halt).

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_gunicorns() {
        assert_eq!(BootError::Worker.status(), 3);
        assert_eq!(BootError::AppLoad.status(), 4);
    }
}
