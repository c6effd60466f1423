//! A child spawner proc: starts `N` procs of `PROGRAM` (with the remaining
//! arguments) in its own realm, waits for each, prints their statuses, and
//! exits 0 if every child ended ok, 1 otherwise.
//!
//! `spawner N PROGRAM [ARGS...]`, started by sigmad (it needs fd 3).

use sigma_proc::{Proc, Spawn, Status};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(n), Some(program)) = (args.get(1).and_then(|n| n.parse::<u32>().ok()), args.get(2)) else {
        eprintln!("usage: spawner N PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let mut p = match Proc::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("spawner: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = p.started() {
        eprintln!("spawner: started: {e}");
        std::process::exit(1);
    }
    let mut children = Vec::new();
    for _ in 0..n {
        let mut spawn = Spawn::new(program.clone());
        for a in &args[3..] {
            spawn = spawn.arg(a.clone());
        }
        match p.spawn(&spawn) {
            Ok(pid) => children.push(pid),
            Err(e) => {
                println!("spawn failed: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut all_ok = true;
    for pid in children {
        match p.wait_exit(pid, Duration::from_secs(60)) {
            Ok(status) => {
                println!("child {pid} of realm {}: {status}", p.realm());
                all_ok &= status == Status::Ok;
            }
            Err(e) => {
                println!("child {pid}: {e}");
                all_ok = false;
            }
        }
    }
    std::process::exit(if all_ok { 0 } else { 1 });
}
