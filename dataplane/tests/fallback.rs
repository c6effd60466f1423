//! When io_uring cannot be set up, the core says why and runs on epoll.
//!
//! The test re-runs itself in a child process that installs a seccomp
//! filter refusing io_uring_setup with EPERM (as Docker's default profile
//! does), then builds a core with back-end detection.

use std::process::Command;

const CHILD_ENV: &str = "SIGMA_TEST_FALLBACK_CHILD";

fn deny_io_uring_setup() {
    const NR_IO_URING_SETUP: u32 = 425;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let filter = [
        // A = arch; refuse to decide on foreign architectures (allow).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 4,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 3,
            k: AUDIT_ARCH_X86_64,
        },
        // A = syscall number.
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: NR_IO_URING_SETUP,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl and seccomp with a valid, live filter program.
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

#[test]
fn a_core_falls_back_to_epoll_when_seccomp_denies_io_uring() {
    if std::env::var_os(CHILD_ENV).is_some() {
        if !cfg!(target_arch = "x86_64") {
            eprintln!("skipping: the seccomp filter in this test is written for x86_64");
            return;
        }
        deny_io_uring_setup();
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
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_core_falls_back_to_epoll_when_seccomp_denies_io_uring",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("BACKEND=epoll"), "{stdout}");
    assert!(
        stdout.contains("seccomp"),
        "the reason must name the likely cause: {stdout}"
    );
}
