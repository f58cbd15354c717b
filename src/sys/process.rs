//! Everything unsafe about processes, in one place: the master's signal
//! self-pipe, fork with CPython's fork protocol, the reset of signal
//! handling in a child, process groups, exec for USR2, and the scheduling
//! policy of a worker's threads.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::{ForkResult, Pid};

/// The signals the master handles (gunicorn's `SIGNALS` plus CHLD).
pub const MASTER_SIGNALS: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// Write end of the self-pipe, read by the async-signal-safe handler.
static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

/// The same write end, kept in workers (which inherit it) so that a worker
/// can wake its master's loop: a 0 byte is no signal, it only ends the wait.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// From a worker: make the master's loop run now (a worker wants to be
/// replaced). Best effort: a full pipe already wakes the master.
pub fn wake_master() {
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a local to an fd this process
        // inherited and never closes (the master's self-pipe).
        unsafe { libc::write(fd, [0u8].as_ptr() as *const libc::c_void, 1) };
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is non-blocking,
        // so a full pipe drops the byte instead of blocking the handler
        // (the loop wakes anyway on the bytes already queued).
        unsafe { libc::write(fd, &byte as *const u8 as *const libc::c_void, 1) };
    }
}

/// The master's signal queue: handlers write the signal number to a pipe,
/// the loop polls it (gunicorn's `SIG_QUEUE` + `wait_for_signals`).
pub struct SignalPipe {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalPipe {
    pub fn install() -> nix::Result<SignalPipe> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
        PIPE_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        WAKE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for &sig in MASTER_SIGNALS {
            // SAFETY: on_signal only performs an async-signal-safe write.
            unsafe { signal::sigaction(sig, &action) }?;
        }
        Ok(SignalPipe {
            read,
            _write: write,
        })
    }

    /// Wait up to `timeout` for signals and return all queued ones in order.
    pub fn wait(&self, timeout: Duration) -> Vec<Signal> {
        self.wait_also(timeout, &[])
    }

    /// [`wait`](Self::wait), also woken when one of `also` is readable
    /// (the metrics listener and its connections: a scrape is answered at once).
    pub fn wait_also(&self, timeout: Duration, also: &[BorrowedFd<'_>]) -> Vec<Signal> {
        let mut fds = vec![PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
        fds.extend(also.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        );
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match nix::unistd::read(&self.read, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend(
                    buf[..n]
                        .iter()
                        .filter_map(|&b| Signal::try_from(b as i32).ok()),
                ),
            }
        }
        out
    }
}

/// In a freshly forked child: back to default dispositions for everything
/// the master handled and an empty signal mask; a worker also ignores
/// HUP/USR2/WINCH (so `pkill -HUP rgunicorn` reloads the master instead of
/// killing workers).
/// In a forked child, with the master's signals still blocked (see
/// [`fork_python`]): the default dispositions (HUP/USR2/WINCH ignored but
/// in the USR2 child), then the child's mask. A worker keeps its own
/// signals blocked, so that one sent between the fork and its signal
/// thread waits for that thread (a TERM drains the worker) instead of
/// running the master's handler in the child, where it was lost.
fn reset_child_signals(kind: ChildKind) {
    PIPE_WRITE_FD.store(-1, Ordering::Relaxed);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for &sig in MASTER_SIGNALS {
        let action = match sig {
            Signal::SIGHUP | Signal::SIGUSR2 | Signal::SIGWINCH if kind != ChildKind::Exec => {
                &ignore
            }
            _ => &default,
        };
        // SAFETY: installing SIG_DFL / SIG_IGN is always sound.
        let _ = unsafe { signal::sigaction(sig, action) };
    }
    let mask = match kind {
        ChildKind::Worker => worker_signal_set(),
        ChildKind::Exec | ChildKind::Reloader => SigSet::empty(),
    };
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_SETMASK, Some(&mask), None);
}

/// The master's signals, blocked for the duration of a fork.
fn master_signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for &sig in MASTER_SIGNALS {
        set.add(sig);
    }
    set
}

/// What a forked child of the master becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A worker: HUP/USR2/WINCH ignored, its own process group (a SIGKILL
    /// on timeout takes the worker's own children with it).
    Worker,
    /// The USR2 child that execs the new master: default dispositions (an
    /// ignored signal would stay ignored across exec), same process group.
    Exec,
    /// The `reload` watcher: as a worker (its own process group, so a
    /// terminal's Ctrl-C reaches only the master, which stops it).
    Reloader,
}

/// Fork with CPython's fork protocol (`PyOS_BeforeFork` /
/// `PyOS_AfterFork_*`), so `os.register_at_fork` callbacks run: `random`
/// is reseeded and `logging`'s locks are reset in the child. Must be called
/// from the master's (only) thread while attached to the interpreter. The
/// child runs `child` and exits with its status; it never returns.
pub fn fork_python(
    _py: pyo3::Python<'_>,
    kind: ChildKind,
    child: impl FnOnce() -> i32,
) -> nix::Result<Pid> {
    // SAFETY: we are attached to the interpreter on the thread that
    // initialised it (the `py` token proves attachment), as the
    // PyOS_*Fork functions require.
    unsafe { pyo3::ffi::PyOS_BeforeFork() };
    // Blocked across the fork: until the child has its own dispositions,
    // a signal sent to it would run the master's handler there.
    let mut before = SigSet::empty();
    let _ = signal::sigprocmask(
        signal::SigmaskHow::SIG_BLOCK,
        Some(&master_signal_set()),
        Some(&mut before),
    );
    // SAFETY: the master is single-threaded (no tokio, no helper threads),
    // so the child's copy of the address space holds no lock taken by a
    // thread that no longer exists.
    let forked = unsafe { nix::unistd::fork() };
    if !matches!(forked, Ok(ForkResult::Child)) {
        let _ = signal::sigprocmask(signal::SigmaskHow::SIG_SETMASK, Some(&before), None);
    }
    match forked {
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: parent side of the protocol, same thread.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Ok(child)
        }
        Ok(ForkResult::Child) => {
            // SAFETY: child side of the protocol, first thing after fork.
            unsafe { pyo3::ffi::PyOS_AfterFork_Child() };
            // The parent reports the lines it dropped itself.
            crate::log::forget_dropped();
            reset_child_signals(kind);
            if kind != ChildKind::Exec {
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            }
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(1);
            exit_now(code)
        }
        Err(e) => {
            // SAFETY: the fork failed; undo BeforeFork in this process.
            unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
            Err(e)
        }
    }
}

/// Replace this process (the USR2 child) with a new master: `argv[0]` run
/// with `argv` and exactly `env`, the listening sockets `keep_fds` left
/// open across exec. Returns only on failure.
pub fn exec_master(
    argv: &[String],
    env: &[(String, String)],
    keep_fds: &[std::os::fd::RawFd],
) -> std::io::Error {
    use std::ffi::CString;
    for &fd in keep_fds {
        // SAFETY: fcntl(F_SETFD) on a descriptor the master owns only
        // clears its close-on-exec flag.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return std::io::Error::last_os_error();
        }
    }
    let cstr = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let args: Result<Vec<CString>, _> = argv.iter().map(|a| cstr(a)).collect();
    let vars: Result<Vec<CString>, _> =
        env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect();
    let (args, vars) = match (args, vars) {
        (Ok(a), Ok(v)) => (a, v),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let Some(program) = args.first() else {
        return std::io::Error::other("empty command line");
    };
    match nix::unistd::execve(program, &args, &vars) {
        Err(e) => e.into(),
    }
}

/// In a freshly forked worker: close the master's own fds that the worker
/// must not hold (the metrics exporter's and the control socket's, with
/// their client connections: a client's connection must end when the
/// master drops it, and a port must not outlive the master).
pub fn close_master_fds(fds: &[std::os::fd::RawFd]) {
    for &fd in fds {
        // SAFETY: these fds belong to master objects whose copies in this
        // child are never used or dropped (a worker leaves with _exit).
        unsafe { libc::close(fd) };
    }
}

/// In a child that must not outlive the master (the reloader): SIGTERM
/// when the master's thread ends, or now if the master is already gone.
pub fn die_with_parent(master: i32) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    if nix::unistd::getppid().as_raw() != master {
        exit_now(0);
    }
}

/// Leave the process at once (no atexit handlers, no Python finalisation:
/// a worker must not run the master's cleanup).
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit is always sound; it ends the process immediately.
    unsafe { libc::_exit(code) }
}

pub fn kill(pid: Pid, sig: Signal) -> nix::Result<()> {
    signal::kill(pid, sig)
}

/// SIGKILL a worker and its process group (its own children).
pub fn kill_group(pid: Pid) {
    let _ = signal::killpg(pid, Signal::SIGKILL);
    let _ = signal::kill(pid, Signal::SIGKILL);
}

/// A process's resident set size in bytes, from `/proc/<pid>/statm`
/// (None when the process is gone or /proc is unreadable).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    static PAGE_SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let page = *PAGE_SIZE.get_or_init(|| {
        // SAFETY: sysconf only reads a system constant.
        match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        }
    });
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page)
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(Signal),
}

/// Reap every exited child without blocking.
pub fn reap() -> Vec<(Pid, ExitKind)> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, ExitKind::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, ExitKind::Signal(sig))),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    out
}

/// Block the worker-handled signals in the calling thread (and the
/// threads it spawns afterwards), so that one thread can `sigwait` them.
pub fn block_worker_signals() -> SigSet {
    let set = worker_signal_set();
    let _ = signal::sigprocmask(signal::SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}

fn worker_signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGABRT,
        Signal::SIGUSR1,
    ] {
        set.add(sig);
    }
    set
}

/// Another way to set the title: the Python `setproctitle` module when it
/// is installed, as gunicorn uses it. It owns the argument area once it has
/// started (and apps call it too), so rgunicorn must not write there then.
static TITLE_SETTER: std::sync::OnceLock<fn(&str) -> bool> = std::sync::OnceLock::new();

/// Set titles through `set` from now on (`false` from it: written here).
pub fn set_title_with(set: fn(&str) -> bool) {
    let _ = TITLE_SETTER.set(set);
}

/// Set the process title shown by `ps` and `/proc/PID/cmdline`
/// (`rgunicorn: master [name]`), as gunicorn does with `setproctitle`: the
/// title is written over the process's original argument strings (so it
/// is cut to their length) and the short name (`comm`, 15 bytes) is set too.
pub fn set_title(title: &str) {
    if let Some(set) = TITLE_SETTER.get() {
        if set(title) {
            return;
        }
    }
    let short: String = title.chars().take(15).collect();
    if let Ok(c) = std::ffi::CString::new(short) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    let Some((start, end)) = argv_area() else {
        return;
    };
    let len = end - start;
    if len < 2 {
        return;
    }
    let mut bytes = vec![0u8; len];
    let n = title.len().min(len - 1);
    bytes[..n].copy_from_slice(&title.as_bytes()[..n]);
    // SAFETY: [start, end) is this process's own argument strings, as the
    // kernel reports them: writable memory at the top of the main stack
    // that nothing else owns. Rust's std and CPython copied what they need
    // from it at start-up (the command line for USR2 is kept separately).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len) };
}

/// `arg_start` and `arg_end` of this process (fields 48 and 49 of
/// `/proc/self/stat`).
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces: field 3 first.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// `daemon`: detach as gunicorn's `util.daemonize` does: fork (the parent
/// exits 0), `setsid`, fork again, `umask(0o22)`, and stdin, stdout and
/// stderr to /dev/null (stdout and stderr are kept with
/// `enable_stdio_inheritance`). Returns in the daemon.
pub fn daemonize(_py: pyo3::Python<'_>, keep_stdio: bool) -> nix::Result<()> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    for round in 0..2 {
        // SAFETY: a plain fork of the single-threaded process, with
        // CPython's fork protocol (see fork_python); the parent leaves at
        // once without touching the interpreter.
        unsafe { pyo3::ffi::PyOS_BeforeFork() };
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Parent { .. }) => exit_now(0),
            Ok(ForkResult::Child) => unsafe { pyo3::ffi::PyOS_AfterFork_Child() },
            Err(e) => {
                // SAFETY: the fork failed; undo BeforeFork.
                unsafe { pyo3::ffi::PyOS_AfterFork_Parent() };
                return Err(e);
            }
        }
        if round == 0 {
            nix::unistd::setsid()?;
        }
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    let null = open("/dev/null", OFlag::O_RDWR, Mode::empty())?;
    let targets: &[i32] = if keep_stdio { &[0] } else { &[0, 1, 2] };
    for &fd in targets {
        // SAFETY: dup2 onto the standard descriptors, which this process
        // owns; nothing holds a borrowed handle to them.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}

/// Switch a worker to `user`/`group` (after `post_fork`, as gunicorn's
/// `set_owner_process`): uid or gid 0 means "keep"; with `initgroups` the
/// supplementary groups become the user's.
pub fn set_owner(uid: u32, gid: u32, initgroups: bool) -> Result<(), OwnerError> {
    use nix::unistd::{Gid, Uid, User};
    if gid != 0 {
        let user = (uid != 0)
            .then(|| User::from_uid(Uid::from_raw(uid)).ok().flatten())
            .flatten();
        if initgroups {
            if let Some(user) = &user {
                // A user name from the system's database holds no NUL.
                if let Ok(name) = std::ffi::CString::new(user.name.clone()) {
                    nix::unistd::initgroups(&name, Gid::from_raw(gid)).map_err(|source| {
                        OwnerError::InitGroups {
                            user: user.name.clone(),
                            gid,
                            source,
                        }
                    })?;
                }
            }
        }
        if gid != nix::unistd::getgid().as_raw() {
            nix::unistd::setgid(Gid::from_raw(gid))
                .map_err(|source| OwnerError::SetGid { gid, source })?;
        }
    }
    if uid != 0 && uid != nix::unistd::getuid().as_raw() {
        nix::unistd::setuid(Uid::from_raw(uid))
            .map_err(|source| OwnerError::SetUid { uid, source })?;
    }
    Ok(())
}

/// Why a worker could not take its user and group.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("initgroups({user}, {gid}): {source}")]
    InitGroups {
        user: String,
        gid: u32,
        source: nix::Error,
    },
    #[error("setgid({gid}): {source}")]
    SetGid { gid: u32, source: nix::Error },
    #[error("setuid({uid}): {source}")]
    SetUid { uid: u32, source: nix::Error },
}

/// Which side of a Python app's worker the calling thread is on, for its
/// scheduling policy (the thread's own: Linux applies it per thread, and a
/// new thread inherits its creator's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// A tokio thread of a worker serving a Python app with threads (not
    /// gevent's, whose hub holds no lock the I/O thread waits for):
    /// `SCHED_BATCH`, so that its wake-ups (a request in, a response out)
    /// do not preempt the thread running the app, which holds the GIL; the
    /// Python thread runs on to its next wait and the I/O thread then takes
    /// every response of that stretch at once. With a free core it runs at
    /// once all the same.
    Io,
    /// A thread running Python app code: the normal `SCHED_OTHER`.
    App,
}

/// Set the calling thread's scheduling policy for `role`. Unprivileged
/// (neither policy has a priority); a failure (a seccomp filter) only
/// leaves the default policy, so it is logged at debug level.
pub fn set_thread_role(role: ThreadRole) {
    let policy = match role {
        ThreadRole::Io => libc::SCHED_BATCH,
        ThreadRole::App => libc::SCHED_OTHER,
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 names the calling thread; `param` is a valid
    // sched_param that outlives the call, which only reads it.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        let err = std::io::Error::last_os_error();
        crate::log::debug(&format!("sched_setscheduler({role:?}): {err}"));
    }
}
