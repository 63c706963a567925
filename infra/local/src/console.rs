//! What `make run` shows: the events a newcomer wants to see (a batch
//! planned, a version live or failed and why, a redrive) come from the
//! handlers' own logs at `info`; per-request and per-chunk lines are at
//! `debug`, and EMF metric lines are off unless asked for. Instead of a line
//! per request, [`Traffic`] gathers what the gateway answered and
//! [`summary`] prints one line every few seconds while requests come in.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the gateway answered since the last summary.
#[derive(Default)]
pub struct Traffic {
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// Latencies in microseconds.
    latencies: Vec<u32>,
    client_errors: u64,
    server_errors: u64,
}

/// One period's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub client_errors: u64,
    pub server_errors: u64,
}

impl Traffic {
    /// One answered request.
    pub fn record(&self, status: u16, took: Duration) {
        let mut w = self.window.lock().expect("traffic");
        w.latencies
            .push(took.as_micros().min(u32::MAX as u128) as u32);
        match status {
            400..=499 => w.client_errors += 1,
            500..=599 => w.server_errors += 1,
            _ => {}
        }
    }

    /// The figures since the last call, over `period`; `None` when no request came.
    pub fn take(&self, period: Duration) -> Option<Summary> {
        let w = std::mem::take(&mut *self.window.lock().expect("traffic"));
        let mut lat = w.latencies;
        if lat.is_empty() {
            return None;
        }
        lat.sort_unstable();
        let at = |q: f64| {
            Duration::from_micros(u64::from(
                lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)],
            ))
        };
        Some(Summary {
            requests: lat.len(),
            per_s: lat.len() as f64 / period.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
            client_errors: w.client_errors,
            server_errors: w.server_errors,
        })
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "serve: {} requests ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, {} 4xx, {} 5xx",
            self.requests,
            self.per_s,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.client_errors,
            self.server_errors
        )
    }
}

/// Prints a [`Summary`] every `every` while requests come in, until `stop`.
pub async fn summary(
    traffic: std::sync::Arc<Traffic>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Some(s) = traffic.take(last.elapsed()) {
            println!("{s}");
        }
        last = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_summarises_its_requests_and_starts_the_next_empty() {
        let t = Traffic::default();
        assert_eq!(t.take(Duration::from_secs(1)), None);
        for ms in 1..=100u64 {
            t.record(
                if ms == 7 {
                    503
                } else if ms % 10 == 0 {
                    404
                } else {
                    200
                },
                Duration::from_millis(ms),
            );
        }
        let s = t.take(Duration::from_secs(10)).unwrap();
        assert_eq!((s.requests, s.client_errors, s.server_errors), (100, 10, 1));
        assert_eq!(
            (s.p50, s.p99),
            (Duration::from_millis(51), Duration::from_millis(100))
        );
        assert_eq!(s.per_s, 10.0);
        assert!(
            s.to_string().starts_with(
                "serve: 100 requests (10/s), p50 51.00 ms, p99 100.00 ms, 10 4xx, 1 5xx"
            ),
            "{s}"
        );
        assert_eq!(t.take(Duration::from_secs(1)), None);
    }
}
