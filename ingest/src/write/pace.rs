//! Ingest paces itself by what readers see, so that serving stays fast while
//! a batch loads without an operator guessing a rate for their cluster.
//!
//! While a worker writes, a probe sends `PING` to every primary every
//! [`PROBE_EVERY`] over a connection of its own: a reader's command waits in
//! Redis the way the probe's does, where on the writes' own connection it
//! would wait behind them. The slowest primary's round trip steers the
//! worker's rate (AIMD, as TCP steers its window):
//! - past the target, the rate drops to [`DECREASE`] of what the worker sent
//!   since the last probe (at least [`MIN_RATE`]);
//! - under it, the rate grows by [`INCREASE`] of the rate set at the last
//!   drop, every probe, until it no longer binds.
//!
//! The target is `FS_INGEST_TARGET_LATENCY_MS`, or by default twice the
//! quietest round trip the worker has measured (at least [`AUTO_FLOOR`]).
//! A worker starts at full speed and backs off only once readers would
//! notice. Workers do not coordinate: each sees the latency the others
//! cause, and backs off in proportion to what it sends. The fixed cap
//! (`FS_INGEST_MAX_USERS_PER_S`) stays an upper bound on each chunk.
//!
//! One pacer per process, shared by the chunks it writes at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::config::{LatencyTarget, RedisConfig};
use shared::db::store::Redis;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use tracing::{info, warn};

/// How often the probe measures, while the worker writes.
pub const PROBE_EVERY: Duration = Duration::from_millis(20);
/// A probe not answered in this long counts as over any target.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The share of the rate sent kept after a probe past the target.
pub const DECREASE: f64 = 0.7;
/// The rate's growth per probe under the target, as a share of the rate set
/// at the last drop.
pub const INCREASE: f64 = 0.05;
/// The slowest a paced worker goes, in users per second.
pub const MIN_RATE: f64 = 2_000.0;
/// The least target `auto` sets.
pub const AUTO_FLOOR: Duration = Duration::from_millis(1);

/// A worker's pace; see the module's documentation.
pub struct Pacer {
    target: Option<LatencyTarget>,
    redis: RedisConfig,
    /// The probe's own connection, made at the first probe; `None` when it
    /// cannot connect (then nothing is paced, and a warning says so).
    probe: OnceCell<Option<Redis>>,
    state: Mutex<State>,
}

struct State {
    /// Users per second allowed now; infinite while unpaced.
    rate: f64,
    /// The growth per probe under the target.
    step: f64,
    /// When the next users may be sent.
    next_at: Instant,
    /// Users sent since the last probe, and when that was.
    sent: u64,
    since: Instant,
    probing: bool,
    probe_due: Instant,
    quietest: Option<Duration>,
    last_rtt: Option<Duration>,
    drops: u64,
}

/// What a pacer did, for a chunk's log line and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceReport {
    /// The rate it holds the worker to now (users/s), `None` while unpaced.
    pub rate: Option<f64>,
    /// The target it steers by, once known.
    pub target: Option<Duration>,
    pub last_rtt: Option<Duration>,
    /// Times it slowed down since the process started.
    pub drops: u64,
}

impl Pacer {
    /// A pacer for workers of `redis`; `target` `None`: never paces.
    pub fn new(redis: &RedisConfig, target: Option<LatencyTarget>) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Pacer {
            target,
            redis: redis.clone(),
            probe: OnceCell::new(),
            state: Mutex::new(State {
                rate: f64::INFINITY,
                step: 0.0,
                next_at: now,
                sent: 0,
                since: now,
                probing: false,
                probe_due: now,
                quietest: None,
                last_rtt: None,
                drops: 0,
            }),
        })
    }

    /// Waits until `users` more may be sent at the current rate, and counts
    /// them; starts a probe when one is due.
    pub async fn admit(self: &Arc<Self>, users: u64) {
        if self.target.is_none() {
            return;
        }
        let at = {
            let mut s = self.state.lock().expect("pacer");
            let now = Instant::now();
            if !s.probing && now >= s.probe_due {
                s.probing = true;
                tokio::spawn(self.clone().probe());
            }
            s.sent += users;
            if s.rate.is_infinite() {
                return;
            }
            // No credit saved up while idle: a paced worker never bursts.
            let at = s.next_at.max(now);
            s.next_at = at + Duration::from_secs_f64(users as f64 / s.rate);
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// The target now: the configured one, or twice the quietest round trip.
    fn target_now(&self, quietest: Option<Duration>) -> Option<Duration> {
        match self.target? {
            LatencyTarget::Fixed(d) => Some(d),
            LatencyTarget::Auto => quietest.map(|q| (q * 2).max(AUTO_FLOOR)),
        }
    }

    async fn probe(self: Arc<Self>) {
        let conn = self
            .probe
            .get_or_init(|| async {
                match Redis::connect(&self.redis).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!(error = %e, "ingest cannot open its latency probe's connection; writing unpaced");
                        None
                    }
                }
            })
            .await;
        let rtt = match conn {
            Some(c) => {
                let started = Instant::now();
                match tokio::time::timeout(PROBE_TIMEOUT, c.on_each_primary(&redis::cmd("PING")))
                    .await
                {
                    Ok(Ok(_)) => Some(started.elapsed()),
                    // Unanswered: over any target.
                    Ok(Err(_)) | Err(_) => Some(PROBE_TIMEOUT),
                }
            }
            None => None,
        };
        self.observe(rtt, Instant::now());
    }

    /// Steers the rate by one probe's round trip (`None`: no measure).
    fn observe(&self, rtt: Option<Duration>, now: Instant) {
        let mut s = self.state.lock().expect("pacer");
        s.probing = false;
        s.probe_due = now + PROBE_EVERY;
        let Some(rtt) = rtt else { return };
        s.last_rtt = Some(rtt);
        if rtt < PROBE_TIMEOUT {
            s.quietest = Some(s.quietest.map_or(rtt, |q| q.min(rtt)));
        }
        let elapsed = now.duration_since(s.since).as_secs_f64().max(1e-3);
        let sent_rate = s.sent as f64 / elapsed;
        (s.sent, s.since) = (0, now);
        let Some(target) = self.target_now(s.quietest) else {
            return;
        };
        if rtt > target {
            let base = match s.rate.is_finite() {
                true => s.rate.min(sent_rate),
                false => sent_rate,
            };
            let was_unpaced = s.rate.is_infinite();
            s.rate = (base * DECREASE).max(MIN_RATE);
            s.step = s.rate * INCREASE;
            s.drops += 1;
            if was_unpaced {
                info!(
                    rtt_ms = rtt.as_secs_f64() * 1e3,
                    target_ms = target.as_secs_f64() * 1e3,
                    users_per_s = s.rate as u64,
                    "Redis slower than the target while writing; pacing ingest"
                );
            }
        } else if s.rate.is_finite() {
            s.rate += s.step.max(MIN_RATE * INCREASE);
        }
    }

    /// Where the pacer stands.
    pub fn report(&self) -> PaceReport {
        let s = self.state.lock().expect("pacer");
        PaceReport {
            rate: Some(s.rate).filter(|r| r.is_finite()),
            target: self.target_now(s.quietest),
            last_rtt: s.last_rtt,
            drops: s.drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::RedisAuth;

    fn pacer(target: Option<LatencyTarget>) -> Arc<Pacer> {
        let cfg = RedisConfig {
            urls: vec!["redis://127.0.0.1:1".into()],
            cluster: false,
            timeout: Duration::from_millis(100),
            read_from_replicas: false,
            auth: RedisAuth::None,
            ca_file: None,
        };
        Pacer::new(&cfg, target)
    }

    /// `sent` users over `over`, then a probe answered in `rtt_ms`.
    fn step(p: &Pacer, sent: u64, over: Duration, rtt_ms: u64) -> Option<f64> {
        let since = {
            let mut s = p.state.lock().unwrap();
            s.sent = sent;
            s.since
        };
        p.observe(Some(Duration::from_millis(rtt_ms)), since + over);
        p.report().rate
    }

    #[test]
    fn past_the_target_the_rate_drops_to_a_share_of_what_was_sent_and_climbs_back_under_it() {
        let p = pacer(Some(LatencyTarget::Fixed(Duration::from_millis(2))));
        let tick = Duration::from_millis(100);
        // Under the target: unpaced.
        assert_eq!(step(&p, 50_000, tick, 1), None);
        // Past it: 70% of the 500,000 users/s sent.
        let dropped = step(&p, 50_000, tick, 5).unwrap();
        assert!((dropped - 350_000.0).abs() < 1.0, "{dropped}");
        // Under it again: +5% of the dropped rate per probe.
        let up = step(&p, 35_000, tick, 1).unwrap();
        assert!((up - 367_500.0).abs() < 1.0, "{up}");
        // Past it again, from the rate now (not from what was sent, if more).
        let again = step(&p, 100_000, tick, 9).unwrap();
        assert!((again - 367_500.0 * 0.7).abs() < 1.0, "{again}");
        // Never below the floor, however little was sent.
        assert_eq!(step(&p, 1, tick, 9), Some(MIN_RATE));
        assert_eq!(p.report().drops, 3);
    }

    #[test]
    fn auto_targets_twice_the_quietest_round_trip_and_off_never_paces() {
        let p = pacer(Some(LatencyTarget::Auto));
        let tick = Duration::from_millis(100);
        assert_eq!(
            step(&p, 10_000, tick, 3),
            None,
            "the first measure sets the target"
        );
        assert_eq!(p.report().target, Some(Duration::from_millis(6)));
        assert_eq!(step(&p, 10_000, tick, 5), None, "5 ms is under 6 ms");
        assert!(step(&p, 10_000, tick, 7).is_some(), "7 ms is past 6 ms");
        let p = pacer(Some(LatencyTarget::Auto));
        step(&p, 10_000, tick, 0);
        assert_eq!(p.report().target, Some(AUTO_FLOOR));
        let off = pacer(None);
        assert_eq!(step(&off, 10_000, tick, 500), None);
        assert_eq!(off.report().target, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_worker_waits_its_users_share_of_a_second() {
        let p = pacer(Some(LatencyTarget::Fixed(Duration::from_millis(2))));
        {
            let mut s = p.state.lock().unwrap();
            s.rate = 10_000.0;
            // No probe during the test.
            s.probe_due = Instant::now() + Duration::from_secs(3600);
        }
        let started = Instant::now();
        for _ in 0..5 {
            p.admit(2_000).await;
        }
        // The first goes at once; four more wait 0.2 s each.
        assert_eq!(started.elapsed(), Duration::from_millis(800));
    }
}
