//! gunicorn's pidfile: written atomically (temp file + rename) as
//! `"<pid>\n"`, refused when it names another live process, removed on
//! exit only if it still holds our pid.

use std::path::{Path, PathBuf};

pub struct Pidfile {
    pub path: PathBuf,
}

/// Why the pidfile could not be made (gunicorn's texts).
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    #[error("Already running on PID {pid} (or pid file '{path}' is stale)")]
    Running { pid: u32, path: String },
    #[error("can't write pidfile {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("can't create pidfile {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
}

impl Pidfile {
    pub fn create(path: &str, pid: u32) -> Result<Pidfile, PidfileError> {
        let path = PathBuf::from(path);
        if let Some(old) = read_pid(&path) {
            if old != pid
                && old > 0
                && nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), None).is_ok()
            {
                return Err(PidfileError::Running {
                    pid: old,
                    path: path.display().to_string(),
                });
            }
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|f| f.to_str()).unwrap_or("pid"),
            pid
        ));
        std::fs::write(&tmp, format!("{pid}\n")).map_err(|source| PidfileError::Write {
            path: tmp.display().to_string(),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644));
        }
        std::fs::rename(&tmp, &path).map_err(|source| PidfileError::Create {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Pidfile { path })
    }

    /// Move to `path` (a promoted USR2 master takes the configured name
    /// from `<pidfile>.2`): write the new file, then remove the old one.
    pub fn rename(&mut self, path: &str, pid: u32) -> Result<(), PidfileError> {
        let new = Pidfile::create(path, pid)?;
        self.unlink(pid);
        self.path = new.path;
        Ok(())
    }

    /// Remove the file if it still names `pid`.
    pub fn unlink(&self, pid: u32) {
        if read_pid(&self.path) == Some(pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_refuse_live_and_unlink() {
        let dir = std::env::temp_dir().join(format!("rg-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.pid");
        let p = Pidfile::create(path.to_str().unwrap(), std::process::id()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // Another "master" finds a live pid (ours) and refuses.
        let err = Pidfile::create(path.to_str().unwrap(), std::process::id() + 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("Already running on PID"), "{err}");
        p.unlink(std::process::id());
        assert!(!path.exists());
        // A stale file (dead pid) is replaced.
        std::fs::write(&path, "999999999\n").unwrap();
        let mut p = Pidfile::create(path.to_str().unwrap(), std::process::id()).unwrap();
        // Promotion: app.pid.2 -> app.pid.
        let promoted = dir.join("promoted.pid");
        p.rename(promoted.to_str().unwrap(), std::process::id())
            .unwrap();
        assert!(!path.exists() && promoted.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
