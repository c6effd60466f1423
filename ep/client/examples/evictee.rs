//! A proc that waits to be evicted: it says it started, publishes an
//! ephemeral entry `/evictee/PID` attached to a lease of its own, then waits
//! for the eviction and exits on its own within the grace period, printing
//! what it did. With `ignore` as its argument it never waits for eviction
//! (an eviction then kills it at once).

use sigma_proc::Proc;
use std::time::Duration;

fn main() {
    let ignore = std::env::args().nth(1).as_deref() == Some("ignore");
    let mut p = match Proc::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("evictee: {e}");
            std::process::exit(2);
        }
    };
    let lease = p.lease_grant(Duration::from_secs(600)).expect("lease");
    let path = format!("/evictee-{}", p.pid());
    p.create(&path, b"here", Some(lease)).expect("ephemeral entry");
    println!("published {path} under lease {lease}");
    p.started().expect("started");
    if ignore {
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    match p.wait_evict(Duration::from_secs(600)) {
        Ok(true) => println!("evicted: leaving"),
        Ok(false) => println!("never evicted"),
        Err(e) => println!("wait_evict: {e}"),
    }
}
