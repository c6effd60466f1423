//! What an idle core does: spin, park, or park and wake early.
//!
//! A parked core pays a kernel wake-up when work arrives (12–25 µs per
//! wake-up on these VMs, more under load); a spinning core pays none but
//! burns its CPU. Three regimes, chosen from the core's recent idle periods:
//!
//! - **Short waits** (one of the last [`limits::IDLES_REMEMBERED`] ended
//!   within the spin budget, e.g. a ping-pong): spin for the budget, then
//!   park.
//! - **Long, irregular waits**: park at once. Spinning would only burn a CPU
//!   that the peer being waited for may need.
//! - **Long, regular waits** (a client calling a server that takes ~300 µs
//!   per call), in either regime above: *early wake*. Park until a little
//!   before the shortest of the recent long waits would end, then spin
//!   until a little after the usual one ends. When the work arrives during that spin, the core sees it at
//!   once: the kernel wake-up happened before the work arrived, off its
//!   critical path (the way the block layer's hybrid polling sleeps for part
//!   of the expected completion time and polls the rest). It costs the
//!   spin window in CPU, not the whole wait. An early wake that finds
//!   nothing parks again; when the last early wakes all found nothing, the
//!   core stops trying, but for a probe every few idle periods.
//!
//! The decisions are pure functions of the recorded history, tested below
//! without clocks; `runtime.rs` carries them out.

use crate::limits;
use std::cell::Cell;
use std::time::Duration;

const REMEMBERED: usize = limits::IDLES_REMEMBERED as usize;

/// An early wake, as offsets from the start of the idle period: park until
/// `wake_after`, then spin until `spin_until`, then park for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Early {
    pub(crate) wake_after: Duration,
    pub(crate) spin_until: Duration,
}

/// A core's memory of its idle periods and what it decides from them.
#[derive(Debug)]
pub(crate) struct IdlePolicy {
    budget: Duration,
    early_wake: bool,
    /// One bit per idle period, newest lowest: 1 if it ended within the
    /// budget.
    short_idles: Cell<u16>,
    /// Lengths of the last idle periods that outlasted the budget, µs
    /// (saturating), a ring.
    lengths_us: Cell<[u32; REMEMBERED]>,
    /// Next slot of `lengths_us`; periods recorded so far, up to REMEMBERED.
    next: Cell<u8>,
    seen: Cell<u8>,
    /// One bit per early wake, newest lowest: 1 if work arrived during its
    /// spin.
    early_caught: Cell<u16>,
    /// Idle periods since the last early wake, for probing while early
    /// wakes are off.
    since_early: Cell<u32>,
    /// Set by a task that knows what it waits for takes long (a proc's
    /// start on another thread): the next idle period parks at once, and
    /// is not remembered (it says nothing about the core's usual waits).
    park_next: Cell<bool>,
    /// How late a parked core resumes after what it waited for happened,
    /// µs: a moving average of how late its early-wake timers fire. A wait
    /// that ended in a park is remembered this much shorter, as the time the
    /// work arrived; remembering the time the core resumed instead would
    /// push the next early wake later each time one misses, until none
    /// catches anything.
    wake_latency_us: Cell<u32>,
}

// One bit per remembered idle period and per remembered early wake.
const _: () = assert!(limits::IDLES_REMEMBERED == u16::BITS);
const _: () = assert!(REMEMBERED <= u8::MAX as usize);

impl IdlePolicy {
    /// `budget`: how long an idle core may spin before parking (zero: never
    /// spin, never wake early). `early_wake`: whether long regular waits
    /// get early wakes (the driver must support waits with a deadline).
    pub(crate) fn new(budget: Duration, early_wake: bool) -> IdlePolicy {
        IdlePolicy {
            budget,
            early_wake: early_wake && !budget.is_zero(),
            short_idles: Cell::new(u16::MAX),
            lengths_us: Cell::new([0; REMEMBERED]),
            next: Cell::new(0),
            seen: Cell::new(0),
            early_caught: Cell::new(u16::MAX),
            since_early: Cell::new(0),
            park_next: Cell::new(false),
            wake_latency_us: Cell::new(0),
        }
    }

    /// The next idle period parks at once ([`crate::expect_long_wait`]).
    pub(crate) fn park_next(&self) {
        self.park_next.set(true);
    }

    /// Whether the coming idle period was announced long (and forgets the
    /// announcement).
    pub(crate) fn take_park_next(&self) -> bool {
        self.park_next.replace(false)
    }

    /// The spin budget.
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether the next idle period spins for the budget before parking:
    /// while one of the last idle periods ended within it.
    pub(crate) fn spins(&self) -> bool {
        !self.budget.is_zero() && self.short_idles.get() != 0
    }

    /// Whether the park that follows (the spin found nothing, or there was
    /// none) ends early, and when. Asked only when the core is about to
    /// park, so a spinning core that finds work pays nothing for it.
    pub(crate) fn early(&self) -> Option<Early> {
        if !self.early_wake || usize::from(self.seen.get()) < REMEMBERED {
            return None;
        }
        let since = self.since_early.get();
        let probing = since >= limits::EARLY_WAKE_PROBE_EVERY;
        if self.early_caught.get() == 0 && !probing {
            return None;
        }
        let mut sorted = self.lengths_us.get();
        sorted.sort_unstable();
        // The second shortest and the third-quartile wait: one outlier does
        // not move the wake-up earlier, and most waits end in the window.
        let shortest = Duration::from_micros(u64::from(sorted[1]));
        let usual = Duration::from_micros(u64::from(sorted[REMEMBERED * 3 / 4]));
        // Wake one budget before the shortest wait ends, so that a timer that
        // fires late still wakes the core in time; only worth it when that
        // leaves a park at least as long as the budget.
        if shortest < self.budget * 2 {
            return None;
        }
        let wake_after = shortest - self.budget;
        let spin_until = (usual + self.budget).min(wake_after + self.budget * limits::EARLY_WAKE_SPIN_BUDGETS_MAX);
        Some(Early { wake_after, spin_until })
    }

    /// Records an idle period that lasted `length`; `parked` if it ended
    /// with a kernel wake-up from a park (not while spinning).
    pub(crate) fn record(&self, length: Duration, parked: bool) {
        let length = if parked {
            length.saturating_sub(Duration::from_micros(u64::from(self.wake_latency_us.get())))
        } else {
            length
        };
        let short = length <= self.budget;
        self.short_idles.set((self.short_idles.get() << 1) | u16::from(short));
        self.since_early.set(self.since_early.get().saturating_add(1));
        if short {
            // Early wakes are about the waits that end in a park: a client
            // core's short waits (its own send completing) alternate with
            // the long ones (the reply) and say nothing about them.
            return;
        }
        let mut lengths = self.lengths_us.get();
        let next = usize::from(self.next.get());
        lengths[next] = length.as_micros().min(u128::from(u32::MAX)) as u32;
        self.lengths_us.set(lengths);
        self.next.set(((next + 1) % REMEMBERED) as u8);
        self.seen.set((self.seen.get() + 1).min(REMEMBERED as u8));
    }

    /// Records that an early wake's timer fired `late` after its deadline.
    pub(crate) fn record_timer_lateness(&self, late: Duration) {
        let late = late.as_micros().min(u128::from(u32::MAX)) as u32;
        let avg = self.wake_latency_us.get();
        // An average over about the last 8 wakes.
        self.wake_latency_us.set(avg - avg / 8 + late / 8);
    }

    /// Records how an early wake went: `caught` if work arrived during its
    /// spin.
    pub(crate) fn record_early(&self, caught: bool) {
        self.early_caught
            .set((self.early_caught.get() << 1) | u16::from(caught));
        self.since_early.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Duration = Duration::from_micros(50);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn policy_after(lengths: &[u64]) -> IdlePolicy {
        let p = IdlePolicy::new(BUDGET, true);
        for &l in lengths {
            p.record(us(l), false);
        }
        p
    }

    /// Whether the policy spins, and its early wake.
    fn plan(p: &IdlePolicy) -> (bool, Option<Early>) {
        (p.spins(), p.early())
    }

    #[test]
    fn a_new_core_spins() {
        assert_eq!(plan(&IdlePolicy::new(BUDGET, true)), (true, None));
    }

    #[test]
    fn an_announced_long_wait_is_taken_once() {
        let p = IdlePolicy::new(BUDGET, true);
        assert!(!p.take_park_next());
        p.park_next();
        assert!(p.take_park_next());
        assert!(!p.take_park_next());
        // It does not change what the history says.
        assert!(p.spins());
    }

    #[test]
    fn zero_budget_never_spins_nor_wakes_early() {
        let p = IdlePolicy::new(Duration::ZERO, true);
        for _ in 0..40 {
            p.record(us(400), false);
        }
        assert_eq!(plan(&p), (false, None));
    }

    #[test]
    fn one_short_wait_keeps_spinning_for_sixteen_idles() {
        let p = policy_after(&[400; 20]);
        assert!(!p.spins());
        p.record(us(10), false);
        for _ in 0..15 {
            p.record(us(400), false);
            assert!(p.spins());
        }
        p.record(us(400), false);
        assert!(!p.spins());
    }

    #[test]
    fn long_regular_waits_wake_early_around_the_usual_wait() {
        // Waits of 300–375 µs, in any order.
        let lengths: Vec<u64> = (0..16).map(|i| 300 + (i * 7 % 16) * 5).collect();
        let p = policy_after(&lengths);
        let early = p.early().expect("an early wake");
        assert!(!p.spins());
        // Second shortest 305 µs, less one budget.
        assert_eq!(early.wake_after, us(255));
        // Third quartile (sorted[12] = 360 µs) plus one budget.
        assert_eq!(early.spin_until, us(410));
    }

    #[test]
    fn short_waits_between_long_ones_spin_first_and_still_wake_early() {
        // A client core: its send completes at once, the reply takes ~400 µs.
        let mut lengths = Vec::new();
        for _ in 0..16 {
            lengths.extend([5, 400]);
        }
        let p = policy_after(&lengths);
        assert!(p.spins());
        assert_eq!(
            p.early(),
            Some(Early {
                wake_after: us(350),
                spin_until: us(450)
            })
        );
    }

    #[test]
    fn waits_ended_by_a_wake_up_count_from_when_the_work_arrived() {
        // Replies come after 300 µs; the core resumes 100 µs later when it
        // parks through them, as its early-wake timers show.
        let p = IdlePolicy::new(BUDGET, true);
        for _ in 0..16 {
            p.record_timer_lateness(us(100));
        }
        // The average has come most of the way (an average over ~8).
        assert!(
            (80..=100).contains(&p.wake_latency_us.get()),
            "{}",
            p.wake_latency_us.get()
        );
        for _ in 0..16 {
            p.record(us(400), true);
        }
        let early = p.early().unwrap();
        // Without the correction the core would wake at 350 µs, after the
        // reply, every time.
        assert!(early.wake_after < us(300), "{early:?}");
    }

    #[test]
    fn the_early_spin_is_bounded() {
        // Widely spread waits: the window is capped at a few budgets.
        let lengths: Vec<u64> = (0..16).map(|i| 200 + i * 200).collect();
        let early = policy_after(&lengths).early().unwrap();
        assert_eq!(early.wake_after, us(350));
        assert_eq!(early.spin_until, us(350) + BUDGET * limits::EARLY_WAKE_SPIN_BUDGETS_MAX);
    }

    #[test]
    fn waits_too_short_to_park_first_do_not_wake_early() {
        assert_eq!(plan(&policy_after(&[90; 16])), (false, None));
    }

    #[test]
    fn no_early_wake_before_the_history_is_full_or_when_disabled() {
        assert_eq!(policy_after(&[400; 15]).early(), None);
        let off = IdlePolicy::new(BUDGET, false);
        for _ in 0..16 {
            off.record(us(400), false);
        }
        assert_eq!(plan(&off), (false, None));
    }

    #[test]
    fn early_wakes_that_never_catch_stop_but_for_probes() {
        let p = policy_after(&[400; 16]);
        for _ in 0..16 {
            assert!(p.early().is_some());
            p.record_early(false);
            p.record(us(400), false);
        }
        // All of the last 16 missed: off, until a probe.
        let mut probes = 0;
        for _ in 0..limits::EARLY_WAKE_PROBE_EVERY * 3 {
            if p.early().is_some() {
                probes += 1;
                p.record_early(false);
            }
            p.record(us(400), false);
        }
        assert_eq!(probes, 3);
        // A probe that catches turns early wakes back on.
        while p.early().is_none() {
            p.record(us(400), false);
        }
        p.record_early(true);
        p.record(us(400), false);
        assert!(p.early().is_some());
    }
}
