//! A progress line on stderr for long reads (`audit` over thousands of Workflows): nothing for a run
//! that ends within a couple of seconds, then at most one update a second; rewritten in place on a
//! terminal, a line each otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const QUIET_FOR: Duration = Duration::from_secs(2);
const EVERY: Duration = Duration::from_secs(1);

pub struct Progress {
    /// Who reads what: `stage-guard audit`, counting `Workflows`.
    who: String,
    what: &'static str,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
}

impl Progress {
    pub fn new(who: String, what: &'static str) -> Progress {
        Progress {
            who,
            what,
            started: Instant::now(),
            last: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// `done` items so far.
    pub fn update(&mut self, done: usize) {
        let now = Instant::now();
        if now.duration_since(self.started) < QUIET_FOR
            || self.last.is_some_and(|l| now.duration_since(l) < EVERY)
        {
            return;
        }
        self.last = Some(now);
        self.print(done, false);
    }

    /// The last line, when any was printed.
    pub fn finish(&mut self, done: usize) {
        if self.last.is_some() {
            self.print(done, true);
        }
    }

    fn print(&self, done: usize, last: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!("{}: {done} {} read in {secs:.1} s", self.who, self.what);
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}
