//! Storms of wake-ups from other threads while a core parks: none is lost
//! (every task woken runs), and the completion queue never overflows (the
//! notifications are bounded by `limits::WAKES_UNOBSERVED_MAX`; the bound
//! itself is unit-tested in `driver/unpark.rs`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

const WAKERS: usize = 4;
const ROUNDS: u64 = 20_000;

#[test]
fn many_threads_waking_a_parked_core_send_a_bounded_number_of_notifications() {
    for backend in common::backends() {
        common::within(Duration::from_secs(60), &format!("{backend}: wake storm"), move || {
            let core = common::core(backend);
            core.block_on(async move {
                let done = Arc::new(AtomicU64::new(0));
                let slot: Arc<Mutex<Option<Waker>>> = Arc::new(Mutex::new(None));
                // Each waker thread bumps the counter, then wakes the task:
                // the task must see every bump (no lost wake-up).
                let threads: Vec<_> = (0..WAKERS)
                    .map(|_| {
                        let (done, slot) = (done.clone(), slot.clone());
                        std::thread::spawn(move || {
                            for i in 0..ROUNDS {
                                done.fetch_add(1, Ordering::SeqCst);
                                if let Some(w) = slot.lock().unwrap().as_ref() {
                                    w.wake_by_ref();
                                }
                                if i % 1000 == 0 {
                                    // Let the core park now and then.
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                            }
                        })
                    })
                    .collect();
                std::future::poll_fn(|cx| {
                    *slot.lock().unwrap() = Some(cx.waker().clone());
                    if done.load(Ordering::SeqCst) == WAKERS as u64 * ROUNDS {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                for t in threads {
                    t.join().unwrap();
                }
                // Many tasks, all parked, then all woken at once from another
                // thread: one notification each would be TASKS completions.
                const TASKS: usize = 2_000;
                let slots: Arc<Vec<Mutex<Option<Waker>>>> = Arc::new((0..TASKS).map(|_| Mutex::new(None)).collect());
                let flags: Arc<Vec<AtomicU64>> = Arc::new((0..TASKS).map(|_| AtomicU64::new(0)).collect());
                let tasks: Vec<_> = (0..TASKS)
                    .map(|i| {
                        let (slots, flags) = (slots.clone(), flags.clone());
                        sigma_dataplane::spawn(std::future::poll_fn(move |cx| {
                            *slots[i].lock().unwrap() = Some(cx.waker().clone());
                            if flags[i].load(Ordering::SeqCst) == 1 {
                                Poll::Ready(())
                            } else {
                                Poll::Pending
                            }
                        }))
                    })
                    .collect();
                sigma_dataplane::yield_now().await;
                let waker_thread = {
                    let (slots, flags) = (slots.clone(), flags.clone());
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(20));
                        for i in 0..TASKS {
                            flags[i].store(1, Ordering::SeqCst);
                            if let Some(w) = slots[i].lock().unwrap().as_ref() {
                                w.wake_by_ref();
                            }
                        }
                    })
                };
                for t in tasks {
                    t.await;
                }
                waker_thread.join().unwrap();
                let stats = sigma_dataplane::stats().expect("on a core");
                assert_eq!(stats.cq_overflows, 0, "{backend}: the completion queue overflowed");
                eprintln!(
                    "{backend}: {} remote wakes, {} parks, {} notifications suppressed by the bound",
                    stats.remote_wakes, stats.parks, stats.wakes_suppressed
                );
            });
        });
    }
}
