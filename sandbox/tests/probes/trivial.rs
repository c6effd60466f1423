//! The trivial proc: exits with the code given as its first argument, or
//! crashes with a segmentation fault when that argument is `crash`.

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "crash" {
        // SAFETY: not safe at all, on purpose: a write through a null
        // pointer is the crash this mode exists to produce (a forced
        // SIGSEGV, which even pid 1 of a pid namespace cannot ignore).
        unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
    }
    std::process::exit(arg.parse::<i32>().unwrap_or(0));
}
