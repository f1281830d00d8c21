//! What one client, or all of them together, may hold of the collector at
//! once: open connections (a global cap kept below the file-descriptor
//! limit, and a per-source cap so that one address cannot lock everybody
//! else out), and the bytes of request bodies in flight. Also giving memory
//! back to the system after a burst. Source addresses are only keys of an
//! in-memory map, dropped when their last connection closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::ratelimit::source_key;

/// File descriptors kept free of connections: the listener, the database
/// and its WAL, the checkpointer, journald, epoll and the odd config read.
pub const FD_RESERVE: u64 = 64;

/// The effective connection caps, after fitting the configured ones to
/// the process's file-descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub global: usize,
    pub per_source: usize,
}

impl ConnectionCaps {
    /// Fit the configured caps to `nofile` (the soft RLIMIT_NOFILE): the
    /// global cap leaves [`FD_RESERVE`] descriptors free, and a single
    /// source never gets more than half of it, so some room is always
    /// left for everybody else. The second value lists what was lowered.
    pub fn fit(global: usize, per_source: usize, nofile: u64) -> (ConnectionCaps, Vec<String>) {
        let mut notes = Vec::new();
        let room = usize::try_from(nofile.saturating_sub(FD_RESERVE))
            .unwrap_or(usize::MAX)
            .max(2);
        let global_fit = global.min(room);
        if global_fit < global {
            notes.push(format!(
                "max_connections lowered from {global} to {global_fit} to stay below the \
                 open-file limit of {nofile} (raise LimitNOFILE= to allow more)"
            ));
        }
        let per_source_fit = per_source.min((global_fit / 2).max(1));
        if per_source_fit < per_source {
            notes.push(format!(
                "max_connections_per_source lowered from {per_source} to {per_source_fit}, \
                 half of the {global_fit} connections allowed in all"
            ));
        }
        (
            ConnectionCaps {
                global: global_fit,
                per_source: per_source_fit,
            },
            notes,
        )
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard one, as most servers do, and
/// return the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        // Unknown: assume the traditional default.
        Err(_) => 1024,
    }
}

/// Open connections, in all and per source.
pub struct Connections {
    open: AtomicUsize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    pub shed: AtomicU64,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    Global,
    PerSource,
}

/// One admitted connection; its slot is released on drop.
pub struct Slot {
    connections: Arc<Connections>,
    source: IpAddr,
}

impl Connections {
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            shed: AtomicU64::new(0),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admit a connection from `peer` if both caps allow it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, caps: ConnectionCaps) -> Result<Slot, Shed> {
        let source = source_key(peer);
        let mut by_source = self.by_source.lock().expect("connections lock");
        let result = if self.open.load(Ordering::Relaxed) >= caps.global {
            Err(Shed::Global)
        } else {
            let n = by_source.entry(source).or_insert(0);
            if *n >= caps.per_source {
                Err(Shed::PerSource)
            } else {
                *n += 1;
                self.open.fetch_add(1, Ordering::Relaxed);
                Ok(Slot {
                    connections: self.clone(),
                    source,
                })
            }
        };
        if result.is_err() {
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_source = self.connections.by_source.lock().expect("connections lock");
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bytes of request bodies the collector holds at once. A request
/// reserves its declared length (or the body limit, when it does not
/// declare one) before a byte of its body is read, and gives it back once
/// its report is parsed.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Bytes reserved since memory was last given back to the system.
    since_trim: AtomicUsize,
}

/// A request body's share of the budget.
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

/// After this many body bytes have come and gone, an idle collector gives
/// its free heap back to the system.
const TRIM_AFTER_BYTES: usize = 8 * 1024 * 1024;

impl BodyBudget {
    pub fn new(total: usize) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))),
            total,
            since_trim: AtomicUsize::new(0),
        }
    }

    /// Reserve `n` bytes now, or `None` when the budget is spent.
    pub fn reserve(&self, n: usize) -> Option<Reservation> {
        let n = u32::try_from(n).ok()?;
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(permit) => {
                self.since_trim.fetch_add(n as usize, Ordering::Relaxed);
                Some(Reservation { _permit: permit })
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.total.saturating_sub(self.bytes.available_permits())
    }

    /// Called after a request let go of its reservation, and now and then
    /// by the service loop: once nothing is in flight and a burst has
    /// passed, give freed heap back to the system.
    pub fn trim_if_idle(&self) {
        if self.in_flight() == 0 && self.since_trim.load(Ordering::Relaxed) >= TRIM_AFTER_BYTES {
            self.since_trim.store(0, Ordering::Relaxed);
            // malloc_trim walks the whole heap; keep it off the runtime's
            // worker threads.
            tokio::task::spawn_blocking(trim_heap);
        }
    }
}

/// glibc keeps freed memory in its arenas for reuse; after a burst of big
/// bodies that is a lot of resident memory nobody uses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks and releases the allocator's own free
    // lists; it takes the arena locks itself.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}

/// glibc creates up to eight arenas per core, each keeping its own free
/// memory; a server whose threads all allocate request buffers does better
/// with few arenas that are reused and trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_heap_arenas() {
    // SAFETY: mallopt changes a tunable of the allocator; called before
    // the runtime starts any thread.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_heap_arenas() {}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: ConnectionCaps = ConnectionCaps {
        global: 4,
        per_source: 2,
    };

    #[test]
    fn one_source_cannot_take_every_slot() {
        let c = Connections::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<Slot> = (0..2).map(|_| c.admit(a, CAPS).unwrap()).collect();
        assert_eq!(c.admit(a, CAPS).err(), Some(Shed::PerSource));
        let more: Vec<Slot> = (0..2).map(|_| c.admit(b, CAPS).unwrap()).collect();
        let other: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(c.admit(other, CAPS).err(), Some(Shed::Global));
        drop(held);
        assert!(c.admit(a, CAPS).is_ok());
        drop(more);
        assert_eq!(
            c.by_source.lock().unwrap().len(),
            0,
            "released sources are forgotten"
        );
        assert_eq!(c.open(), 0);
        assert_eq!(c.shed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_ipv6_slash_64_is_one_source() {
        let c = Connections::new();
        let _x = c.admit("2001:db8::1".parse().unwrap(), CAPS).unwrap();
        let _y = c.admit("2001:db8::2".parse().unwrap(), CAPS).unwrap();
        assert!(c.admit("2001:db8::3".parse().unwrap(), CAPS).is_err());
        assert!(c.admit("2001:db8:1::3".parse().unwrap(), CAPS).is_ok());
    }

    #[test]
    fn caps_stay_below_the_descriptor_limit_and_leave_room_for_others() {
        let (caps, notes) = ConnectionCaps::fit(8192, 128, 1024);
        assert_eq!(caps.global, 1024 - FD_RESERVE as usize);
        assert_eq!(caps.per_source, 128);
        assert_eq!(notes.len(), 1);
        let (caps, _) = ConnectionCaps::fit(8192, 128, 128);
        assert_eq!(caps.global, 64);
        assert_eq!(caps.per_source, 32);
        let (caps, notes) = ConnectionCaps::fit(100, 10, 1 << 20);
        assert_eq!((caps.global, caps.per_source), (100, 10));
        assert!(notes.is_empty());
    }

    #[tokio::test]
    async fn the_body_budget_refuses_past_its_total_and_refills() {
        let budget = BodyBudget::new(100);
        let a = budget.reserve(60).unwrap();
        assert!(budget.reserve(60).is_none());
        assert_eq!(budget.in_flight(), 60);
        drop(a);
        assert!(budget.reserve(100).is_some());
    }
}
