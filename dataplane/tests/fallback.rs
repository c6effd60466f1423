//! When io_uring cannot be set up, the core says why and runs on epoll; when
//! the kernel lacks timed waits, the core does without early wakes.
//!
//! Each test re-runs itself in a child process that installs a seccomp
//! filter refusing some system calls (io_uring_setup with EPERM, as
//! Docker's default profile does; or io_uring_setup and epoll_pwait2 with
//! ENOSYS, as a kernel before 5.11 would), then builds a core with back-end
//! detection.

use std::process::Command;

const CHILD_ENV: &str = "SIGMA_TEST_FALLBACK_CHILD";

const NR_IO_URING_SETUP: u32 = 425;
const NR_EPOLL_PWAIT2: u32 = 441;

/// Installs a seccomp filter on this process that fails each of `denied`
/// (x86_64 syscall number, errno) with its errno and allows everything else.
fn deny(denied: &[(u32, i32)]) {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf,
        k,
    };
    let mut filter = vec![
        // A = arch; on a foreign architecture decide nothing (allow).
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(AUDIT_ARCH_X86_64, (1 + 2 * denied.len()) as u8),
        // A = syscall number.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
    ];
    for &(nr, errno) in denied {
        filter.push(jump(nr, 1));
        filter.push(stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | errno as u32,
        ));
    }
    filter.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl and seccomp with a valid filter program that lives
    // until the call returns (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog
            ),
            0
        );
    }
}

/// Runs the test named `name` again in a child process (which sees
/// CHILD_ENV set to `arg`) and returns its stdout, asserting that it passed.
fn in_child(name: &str, arg: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, arg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_core_falls_back_to_epoll_when_seccomp_denies_io_uring() {
    if std::env::var_os(CHILD_ENV).is_some() {
        if !cfg!(target_arch = "x86_64") {
            eprintln!("skipping: the seccomp filter in this test is written for x86_64");
            return;
        }
        deny(&[(NR_IO_URING_SETUP, libc::EPERM)]);
        std::env::remove_var("SIGMA_IO");
        let core = sigma_dataplane::Core::builder()
            .build()
            .expect("a core must start on epoll");
        println!("BACKEND={} REASON={}", core.backend(), core.backend_reason());
        core.block_on(async {
            let (a, b) = sigma_dataplane::net::UnixStream::pair().unwrap();
            let (res, _) = a.send_all(b"still works".to_vec()).await;
            res.unwrap();
            let (res, got) = b.recv_exact(Vec::with_capacity(16), 11).await;
            res.unwrap();
            assert_eq!(got, b"still works");
        });
        return;
    }
    let stdout = in_child("a_core_falls_back_to_epoll_when_seccomp_denies_io_uring", "1");
    assert!(stdout.contains("BACKEND=epoll"), "{stdout}");
    assert!(
        stdout.contains("seccomp"),
        "the reason must name the likely cause: {stdout}"
    );
}

/// A kernel older than 5.11 has neither io_uring's timed waits nor
/// epoll_pwait2 (ENOSYS), and an older container runtime's seccomp profile
/// refuses both (EPERM): the epoll back end then waits in whole
/// milliseconds (a 1.5 ms sleep takes 2), never less than asked, and the
/// core makes no early wakes (it cannot time them).
#[test]
fn without_epoll_pwait2_waits_round_up_to_milliseconds_and_no_early_wakes_happen() {
    if let Some(errno) = std::env::var_os(CHILD_ENV) {
        if !cfg!(target_arch = "x86_64") {
            eprintln!("skipping: the seccomp filter in this test is written for x86_64");
            return;
        }
        let errno: i32 = errno.to_str().unwrap().parse().unwrap();
        deny(&[(NR_IO_URING_SETUP, errno), (NR_EPOLL_PWAIT2, errno)]);
        std::env::remove_var("SIGMA_IO");
        std::env::remove_var("SIGMA_EARLY_WAKE");
        let core = sigma_dataplane::Core::builder()
            .build()
            .expect("a core must start on epoll");
        println!("BACKEND={}", core.backend());
        let (early_wakes, shortest) = core.block_on(async {
            let mut shortest = std::time::Duration::MAX;
            for _ in 0..40 {
                let t0 = std::time::Instant::now();
                sigma_dataplane::sleep(std::time::Duration::from_micros(1500)).await;
                shortest = shortest.min(t0.elapsed());
            }
            (sigma_dataplane::stats().unwrap().early_wakes, shortest)
        });
        println!("EARLY_WAKES={early_wakes}");
        // Whole milliseconds: epoll_wait, not epoll_pwait2, did the waiting.
        assert!(
            shortest >= std::time::Duration::from_micros(1950),
            "a 1.5 ms sleep ended after {shortest:?}: not a millisecond wait"
        );
        return;
    }
    for errno in [libc::ENOSYS, libc::EPERM] {
        let stdout = in_child(
            "without_epoll_pwait2_waits_round_up_to_milliseconds_and_no_early_wakes_happen",
            &errno.to_string(),
        );
        assert!(stdout.contains("BACKEND=epoll"), "errno {errno}: {stdout}");
        assert!(stdout.contains("EARLY_WAKES=0"), "errno {errno}: {stdout}");
    }
}
