//! A proc starts, sees only its jail, and its exit status comes back.

mod common;

use common::{probe, run, RunOpts, TestSandbox};
use sigma_sandbox::{Error, ExitStatus};

#[test]
fn trivial_proc_exit_codes_and_crash() {
    let t = TestSandbox::new();
    let realm = t.sb().realm(&common::unique("r")).expect("realm");
    let bin = probe("trivial");
    for code in [0, 3, 42] {
        let o = run(t.sb(), &realm, &bin, &[&code.to_string()], &RunOpts::default());
        assert_eq!(o.status, ExitStatus::Exited(code), "stderr: {}", o.stderr);
    }
    let o = run(t.sb(), &realm, &bin, &["crash"], &RunOpts::default());
    assert_eq!(o.status, ExitStatus::Signaled(libc::SIGSEGV));
    drop(realm);
    t.finish();
}
