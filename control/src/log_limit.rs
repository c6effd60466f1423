//! A rate limit on one kind of log line, for what a hostile peer can cause
//! once per connection (a bad connection, a refused one): at most so many
//! lines per window; past that they are counted, and the count is logged
//! with the next line allowed (or by `flush`, at stop).

use std::time::{Duration, Instant};

/// At most `lines` lines per `window` of one kind.
#[derive(Debug)]
pub struct LogLimit {
    lines: u32,
    window: Duration,
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// At most `lines` lines per `window`.
    pub fn new(lines: u32, window: Duration) -> LogLimit {
        LogLimit {
            lines,
            window,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`; with it, the number of lines
    /// suppressed since the last one logged (to be reported with it).
    pub fn admit(&mut self, now: Instant) -> (bool, u64) {
        if self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= self.window)
        {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged >= self.lines {
            self.suppressed += 1;
            return (false, 0);
        }
        self.logged += 1;
        (true, std::mem::take(&mut self.suppressed))
    }

    /// Logs the count of suppressed lines, if any (at stop).
    pub fn flush(&mut self, what: &str) {
        let suppressed = std::mem::take(&mut self.suppressed);
        if suppressed > 0 {
            tracing::warn!(suppressed, "suppressed {suppressed} similar messages ({what})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_limit_are_counted_and_reported_with_the_next_window() {
        let mut limit = LogLimit::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(limit.admit(t), (true, 0));
        assert_eq!(limit.admit(t), (true, 0));
        assert_eq!(limit.admit(t), (false, 0));
        assert_eq!(limit.admit(t + Duration::from_secs(9)), (false, 0));
        assert_eq!(limit.admit(t + Duration::from_secs(10)), (true, 2));
    }
}
