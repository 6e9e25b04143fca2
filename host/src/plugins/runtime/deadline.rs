//! An invocation's end: its wall-clock deadline and its caller's going away.
//!
//! Guest code is stopped by epoch interruption: every tick, a callback checks the store's
//! deadline and whether the caller has cancelled, and traps when either says stop. A guest
//! blocked in a host call runs no code, so the host call a guest can block in for as long as it
//! likes, a sleep (`wasi:clocks/monotonic-clock`'s `subscribe-duration` and `subscribe-instant`),
//! is replaced here by one that wakes at the deadline or when the caller goes, whichever comes
//! first; the guest then resumes and the next tick ends it. Outgoing HTTP is bounded the same way
//! by its timeouts (see `policy`).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, Resource};
use wasmtime::{StoreContextMut, Trap, UpdateDeadline};
use wasmtime_wasi::HostMonotonicClock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

use super::HostState;

/// The interface whose sleeps are replaced, at the version wasmtime-wasi implements (a guest
/// built against any earlier 0.2 release links to it).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// How often a sleeping guest looks whether its caller has gone.
const NAP: Duration = Duration::from_millis(50);

/// Set when whoever awaits an invocation goes away (an HTTP client hung up, a caller's future
/// was dropped): the invocation stops at its next tick with `Cancelled`, sleeping or not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

thread_local! {
    /// The cancel token of the invocation running on this thread, if any.
    static WATCHED: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

impl Cancel {
    /// Whether the caller has gone.
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Stops every invocation watching this token.
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Runs `f`, an invocation on this thread, so that every store it makes watches this token.
    pub(crate) fn watching<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Unwatch;
        impl Drop for Unwatch {
            fn drop(&mut self) {
                WATCHED.with(|w| *w.borrow_mut() = None);
            }
        }
        WATCHED.with(|w| *w.borrow_mut() = Some(self.clone()));
        let _unwatch = Unwatch;
        f()
    }

    /// The token of the invocation running on this thread (a fresh, never-set one outside any).
    pub(super) fn current() -> Cancel {
        WATCHED.with(|w| w.borrow().clone()).unwrap_or_default()
    }

    /// A guard that sets the token when dropped, unless disarmed first: held by the future that
    /// awaits the invocation, so dropping that future stops the guest.
    pub(crate) fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// See [`Cancel::on_drop`].
#[derive(Debug)]
pub(crate) struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    /// The invocation ended on its own; dropping the guard no longer cancels.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.set();
        }
    }
}

/// The error the epoch callback ends a cancelled invocation with.
#[derive(Debug)]
pub(super) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the caller went away")
    }
}

impl std::error::Error for Cancelled {}

/// When one invocation must end and who may end it early.
#[derive(Debug, Clone)]
pub(super) struct Deadline {
    /// The wall-clock limit, from the store's creation.
    pub(super) at: Instant,
    /// The caller's token.
    pub(super) cancel: Cancel,
    /// The origin of the guest's monotonic clock (its zero).
    pub(super) origin: Instant,
}

impl Deadline {
    pub(super) fn after(timeout: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            at: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            cancel: Cancel::current(),
            origin: now,
        }
    }

    /// The guest's monotonic clock: nanoseconds since the store was made.
    pub(super) fn clock(&self) -> GuestClock {
        GuestClock(self.origin)
    }

    /// Whether the guest must stop now, and why.
    fn check(&self) -> Result<(), wasmtime::Error> {
        if self.cancel.is_set() {
            return Err(wasmtime::Error::new(Cancelled));
        }
        if Instant::now() >= self.at {
            return Err(Trap::Interrupt.into());
        }
        Ok(())
    }

    /// A sleep until `until`, cut at the deadline and when the caller goes.
    fn nap(&self, until: Instant) -> Nap {
        Nap {
            until: until.min(self.at),
            cancel: self.cancel.clone(),
        }
    }
}

/// Arms the store: the guest is checked every tick against its deadline and its caller.
pub(super) fn arm(store: &mut wasmtime::Store<HostState>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|cx| {
        cx.data().deadline.check()?;
        Ok(UpdateDeadline::Continue(1))
    });
}

/// The guest's monotonic clock, counting from its store's creation (so the replaced sleeps know
/// what an instant means).
pub(super) struct GuestClock(Instant);

impl HostMonotonicClock for GuestClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A guest's sleep: ready at its time, at the deadline, or when the caller goes.
struct Nap {
    until: Instant,
    cancel: Cancel,
}

#[async_trait::async_trait]
impl Pollable for Nap {
    async fn ready(&mut self) {
        loop {
            let now = Instant::now();
            if now >= self.until || self.cancel.is_set() {
                return;
            }
            let wake = self.until.min(now + NAP);
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        }
    }
}

fn nap(
    mut cx: StoreContextMut<'_, HostState>,
    until: Instant,
) -> wasmtime::Result<(Resource<DynPollable>,)> {
    let state = cx.data_mut();
    let nap = state.deadline.nap(until);
    let nap = state.table.push(nap)?;
    Ok((subscribe(&mut state.table, nap)?,))
}

/// Replaces the guest's sleeps in `linker` (after WASI was added) with ones the deadline and the
/// caller cut short.
pub(super) fn cap_sleeps(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |cx: StoreContextMut<'_, HostState>, (nanos,): (u64,)| {
            let now = Instant::now();
            let until = now
                .checked_add(Duration::from_nanos(nanos))
                .unwrap_or(cx.data().deadline.at);
            nap(cx, until)
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |cx: StoreContextMut<'_, HostState>, (when,): (u64,)| {
            let origin = cx.data().deadline.origin;
            let until = origin
                .checked_add(Duration::from_nanos(when))
                .unwrap_or(cx.data().deadline.at);
            nap(cx, until)
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
