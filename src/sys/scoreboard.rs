//! The scoreboard: one slot of atomics per worker in anonymous shared
//! memory mapped by the master before the first fork. Workers write their
//! heartbeat, state and counters; the master reads them without a round
//! trip (timeouts, "the replacement serves", connection spread).

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};

/// A worker's lifecycle as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SlotState {
    Free = 0,
    /// Forked, loading the app: never timed out (as gunicorn).
    Booting = 1,
    /// Accepting and serving.
    Serving = 2,
    /// Asked the master for a replacement ([`RetireAsk`] says why); still
    /// serving.
    WantsRetire = 3,
    /// Stopped accepting, finishing its connections.
    Draining = 4,
}

/// One cache line per worker at least (no false sharing between
/// workers' request counters).
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    pub pid: AtomicI32,
    pub state: AtomicU32,
    /// CLOCK_MONOTONIC milliseconds of the last heartbeat (0: none yet).
    pub heartbeat_ms: AtomicU64,
    pub requests: AtomicU64,
    pub connections: AtomicU32,
    pub in_flight: AtomicU32,
    /// Responses by status class (1xx..5xx), counted only when metrics are
    /// on (`metrics_bind` or `statsd_host`), as the latency histogram.
    pub status_classes: [AtomicU64; 5],
    /// Request latency (request received -> response head made), one
    /// count per bucket of [`LATENCY_BUCKETS_MS`] and one for +Inf (not
    /// cumulative: the exporter sums them).
    pub latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    /// Sum of the latencies counted, in microseconds.
    pub latency_sum_us: AtomicU64,
    /// Connections closed to make room for waiting ones, by
    /// [`Reclaimed`] reason.
    pub reclaimed: [AtomicU64; 2],
    /// Why the worker asked for its replacement (a [`RetireAsk`]).
    retire_ask: AtomicU32,
}

/// Why a worker asks the master for its replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RetireAsk {
    /// It reached `max_requests`.
    MaxRequests = 0,
    /// A hook in the worker set `worker.alive = False` (gunicorn's workers
    /// then leave their loop after the request in hand).
    NotAlive = 1,
}

/// Why a worker at `worker_connections` closed a connection to make room
/// for one waiting in the accept queue (Prometheus label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaimed {
    /// A kept-alive connection waiting for its next request.
    Idle = 0,
    /// A connection whose first request head has not fully arrived.
    SlowHead = 1,
}

impl Reclaimed {
    pub const ALL: [Reclaimed; 2] = [Reclaimed::Idle, Reclaimed::SlowHead];

    pub fn label(self) -> &'static str {
        match self {
            Reclaimed::Idle => "idle",
            Reclaimed::SlowHead => "slow_head",
        }
    }
}

/// Upper bounds (ms) of the latency histogram's buckets; +Inf follows.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

impl Slot {
    pub fn state(&self) -> SlotState {
        match self.state.load(Ordering::Acquire) {
            1 => SlotState::Booting,
            2 => SlotState::Serving,
            3 => SlotState::WantsRetire,
            4 => SlotState::Draining,
            _ => SlotState::Free,
        }
    }

    pub fn set_state(&self, s: SlotState) {
        self.state.store(s as u32, Ordering::Release);
    }

    /// `from` -> `to` if the state is `from`; true for the one caller
    /// that made the change.
    pub fn transition(&self, from: SlotState, to: SlotState) -> bool {
        self.state
            .compare_exchange(from as u32, to as u32, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Serving -> [`SlotState::WantsRetire`], for `why`: true for the one
    /// caller that made the change (the one to wake the master).
    pub fn ask_retire(&self, why: RetireAsk) -> bool {
        // A worker already asked (or past serving) keeps its reason: each
        // request after max_requests asks again.
        if self.state() != SlotState::Serving {
            return false;
        }
        // Before the state: the master reads the reason once it sees it.
        self.retire_ask.store(why as u32, Ordering::Release);
        self.transition(SlotState::Serving, SlotState::WantsRetire)
    }

    /// Why the worker asked for its replacement.
    pub fn retire_ask(&self) -> RetireAsk {
        match self.retire_ask.load(Ordering::Acquire) {
            1 => RetireAsk::NotAlive,
            _ => RetireAsk::MaxRequests,
        }
    }

    pub fn beat(&self) {
        self.beat_at(monotonic_ms());
    }

    /// Publish a heartbeat taken at `ms` (monotonic).
    pub fn beat_at(&self, ms: u64) {
        self.heartbeat_ms.store(ms, Ordering::Release);
    }

    /// Reset for a new worker (done by the master before fork).
    pub fn claim(&self) {
        self.pid.store(0, Ordering::Relaxed);
        self.heartbeat_ms.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.connections.store(0, Ordering::Relaxed);
        self.in_flight.store(0, Ordering::Relaxed);
        for c in self
            .status_classes
            .iter()
            .chain(&self.latency)
            .chain(&self.reclaimed)
        {
            c.store(0, Ordering::Relaxed);
        }
        self.latency_sum_us.store(0, Ordering::Relaxed);
        self.set_state(SlotState::Booting);
    }

    /// Count one response (the worker's request path, metrics on): three
    /// relaxed atomic adds.
    pub fn record_response(&self, status: u16, micros: u64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.status_classes[class].fetch_add(1, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&ms| micros <= ms * 1000)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Counters summed over slots (live workers, plus those the master folded
/// in when it reaped their workers, so that totals never go down).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub in_flight: u64,
    pub status_classes: [u64; 5],
    pub latency: [u64; LATENCY_BUCKETS_MS.len() + 1],
    pub latency_sum_us: u64,
    pub reclaimed: [u64; 2],
}

impl Totals {
    /// Add one slot's counters.
    pub fn add(&mut self, slot: &Slot) {
        self.requests += slot.requests.load(Ordering::Relaxed);
        self.in_flight += slot.in_flight.load(Ordering::Relaxed) as u64;
        for (t, c) in self.status_classes.iter_mut().zip(&slot.status_classes) {
            *t += c.load(Ordering::Relaxed);
        }
        for (t, c) in self.latency.iter_mut().zip(&slot.latency) {
            *t += c.load(Ordering::Relaxed);
        }
        self.latency_sum_us += slot.latency_sum_us.load(Ordering::Relaxed);
        for (t, c) in self.reclaimed.iter_mut().zip(&slot.reclaimed) {
            *t += c.load(Ordering::Relaxed);
        }
    }
}

/// Milliseconds on CLOCK_MONOTONIC, which all processes of the machine share.
pub fn monotonic_ms() -> u64 {
    monotonic_us() / 1000
}

/// Microseconds on CLOCK_MONOTONIC (the request latency's clock).
pub fn monotonic_us() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000
}

/// [`monotonic_ms`] at the kernel tick's resolution (a few ms), without a
/// clock read: CLOCK_MONOTONIC_COARSE, the same timeline.
pub fn coarse_monotonic_ms() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000 + ts.tv_nsec() as u64 / 1_000_000
}

pub struct Scoreboard {
    slots: NonNull<Slot>,
    len: usize,
}

// SAFETY: the slots are atomics in shared memory that lives as long as the
// process (never unmapped); sharing references across threads is sound.
unsafe impl Send for Scoreboard {}
// SAFETY: as above.
unsafe impl Sync for Scoreboard {}

impl Scoreboard {
    /// Map `len` zeroed slots shared with every child forked afterwards.
    pub fn new(len: usize) -> std::io::Result<Scoreboard> {
        let size =
            NonZeroUsize::new(len * std::mem::size_of::<Slot>()).expect("non-empty scoreboard");
        // SAFETY: a fresh anonymous shared mapping; the kernel zero-fills
        // it, and all-zero bytes are a valid Slot (atomics of 0).
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(Scoreboard {
            slots: ptr.cast(),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.len);
        // SAFETY: i is in bounds of the mapping, which is never unmapped.
        unsafe { &*self.slots.as_ptr().add(i) }
    }

    /// (serving workers, their open connections), in one pass over the
    /// slots: what the fair-share accept needs.
    pub fn load(&self) -> (u32, u32) {
        (0..self.len)
            .map(|i| self.slot(i))
            .filter(|s| matches!(s.state(), SlotState::Serving | SlotState::WantsRetire))
            .fold((0, 0), |(n, conns), s| {
                (n + 1, conns + s.connections.load(Ordering::Relaxed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_with_a_forked_child() {
        let board = Scoreboard::new(4).unwrap();
        board.slot(2).claim();
        // SAFETY: the test process forks a child that only touches atomics and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                board.slot(2).requests.store(42, Ordering::SeqCst);
                board.slot(2).set_state(SlotState::Serving);
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(board.slot(2).requests.load(Ordering::SeqCst), 42);
        assert_eq!(board.slot(2).state(), SlotState::Serving);
        assert_eq!(board.load(), (1, 0));
    }

    #[test]
    fn responses_land_in_their_class_and_bucket() {
        let slot = Slot::default();
        slot.record_response(200, 4_999);
        slot.record_response(204, 5_000);
        slot.record_response(404, 5_001);
        slot.record_response(503, 20_000_000);
        slot.record_response(101, 0);
        let mut t = Totals::default();
        t.add(&slot);
        assert_eq!(t.status_classes, [1, 2, 0, 1, 1]);
        assert_eq!(&t.latency[..2], &[3, 1]);
        assert_eq!(t.latency[LATENCY_BUCKETS_MS.len()], 1);
        assert_eq!(t.latency_sum_us, 4_999 + 5_000 + 5_001 + 20_000_000);
    }
}
