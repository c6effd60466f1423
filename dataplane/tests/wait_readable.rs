//! `wait_readable`: a core waits for an fd to turn readable (a proc's
//! pidfd at its exit) on both back ends; a wait dropped early lets go of
//! its share of the fd once the kernel has.

mod common;

use sigma_dataplane::{sleep, timeout, wait_readable};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A close-on-exec, non-blocking pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into a live array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(r, 0, "pipe2");
    // SAFETY: two fresh fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn a_wait_ends_when_the_fd_turns_readable_and_a_dropped_one_lets_go() {
    for backend in common::backends() {
        let core = common::core(backend);

        // Readable later: the wait ends then, not before.
        let (r, w) = pipe();
        let r = Arc::new(r);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: a one-byte write from a live buffer to our pipe.
            let n = unsafe { libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), b"x".as_ptr().cast(), 1) };
            assert_eq!(n, 1, "write");
            w
        });
        let t0 = Instant::now();
        core.block_on(wait_readable(r.clone())).expect("readable");
        assert!(t0.elapsed() >= Duration::from_millis(40), "{backend:?}: ended early");
        let _w = writer.join().unwrap();
        // Readable already: at once.
        core.block_on(timeout(Duration::from_secs(5), wait_readable(r.clone())))
            .expect("at once")
            .expect("readable");

        // Never readable: dropped by a timeout, and the fd's other share
        // goes back once the kernel has let go (the poll cancelled).
        let (r2, _w2) = pipe();
        let r2 = Arc::new(r2);
        let res = core.block_on(timeout(Duration::from_millis(20), wait_readable(r2.clone())));
        assert!(res.is_err(), "{backend:?}: an unreadable fd woke the wait");
        core.block_on(async {
            for _ in 0..500 {
                if Arc::strong_count(&r2) == 1 {
                    break;
                }
                sleep(Duration::from_millis(1)).await;
            }
        });
        assert_eq!(
            Arc::strong_count(&r2),
            1,
            "{backend:?}: the dropped wait still holds the fd"
        );

        // A child's pidfd: readable when it exits.
        let mut child = std::process::Command::new("sleep").arg("0.05").spawn().expect("sleep");
        // SAFETY: pidfd_open of our own child; a fresh fd on success.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd owned by nobody else.
        let pidfd = Arc::new(unsafe { OwnedFd::from_raw_fd(pidfd as i32) });
        let t0 = Instant::now();
        core.block_on(wait_readable(pidfd)).expect("the child's exit");
        assert!(
            t0.elapsed() >= Duration::from_millis(30),
            "{backend:?}: ended before the child did"
        );
        assert!(
            child.try_wait().expect("try_wait").is_some(),
            "{backend:?}: readable but not exited"
        );
    }
}
