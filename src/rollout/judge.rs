//! Judging one rollout step from the canary's and the baseline's requests during that
//! step: a pure function of the rollout's thresholds and two windows of counts, so every
//! rule is tested without clocks or traffic.

use serde::Serialize;

use crate::config::FileRollout;
use crate::telemetry::Counts;

/// A step short of `min_requests` waits this many intervals, then fails.
pub const MAX_WAIT_INTERVALS: u32 = 10;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Too few canary requests yet.
    Wait,
    /// A threshold was crossed (or traffic never came): the reason names it and the value.
    Fail(String),
}

/// What was measured for one step, and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub canary_requests: u64,
    pub canary_error_rate: f64,
    /// `None` until the canary has answered a request in this step.
    pub canary_p99_ms: Option<f64>,
    pub baseline_requests: u64,
    pub baseline_error_rate: f64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Measure a window without judging it (for status while a step runs).
pub fn measure(canary: &Counts, baseline: &Counts) -> Judgement {
    Judgement {
        canary_requests: canary.requests,
        canary_error_rate: canary.error_rate(),
        canary_p99_ms: canary.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
        baseline_requests: baseline.requests,
        baseline_error_rate: baseline.error_rate(),
        verdict: Verdict::Wait,
    }
}

/// Judge a step at the end of its `judged`-th interval (1 = the first).
pub fn judge(r: &FileRollout, canary: &Counts, baseline: &Counts, judged: u32) -> Judgement {
    let mut j = measure(canary, baseline);
    j.verdict = verdict(r, &j, judged);
    j
}

fn verdict(r: &FileRollout, j: &Judgement, judged: u32) -> Verdict {
    if j.canary_requests < r.min_requests {
        return if judged >= MAX_WAIT_INTERVALS {
            Verdict::Fail(format!(
                "only {} canary requests after {judged} intervals (min_requests = {})",
                j.canary_requests, r.min_requests
            ))
        } else {
            Verdict::Wait
        };
    }
    if j.canary_error_rate > r.max_error_rate {
        return Verdict::Fail(format!(
            "canary error rate {:.4} > max_error_rate {} ({} of {} requests)",
            j.canary_error_rate,
            r.max_error_rate,
            canary_errors(j),
            j.canary_requests
        ));
    }
    if let (Some(max), Some(p99)) = (r.max_p99, j.canary_p99_ms) {
        let max_ms = max.as_secs_f64() * 1000.0;
        if p99 > max_ms {
            return Verdict::Fail(format!("canary p99 {p99:.1} ms > max_p99 {max_ms:.1} ms"));
        }
    }
    // Compared only with a baseline that had traffic of its own in the step (at a 100%
    // step it has none, and an empty baseline's 0% would judge the canary against nothing).
    if let Some(max) = r.max_error_rate_increase.filter(|_| j.baseline_requests >= r.min_requests.max(1)) {
        let increase = j.canary_error_rate - j.baseline_error_rate;
        if increase > max {
            return Verdict::Fail(format!(
                "canary error rate {:.4} is {increase:.4} above the baseline's {:.4} > max_error_rate_increase {max}",
                j.canary_error_rate, j.baseline_error_rate
            ));
        }
    }
    Verdict::Pass
}

fn canary_errors(j: &Judgement) -> u64 {
    (j.canary_error_rate * j.canary_requests as f64).round() as u64
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config;
    use crate::telemetry::Tally;

    fn rollout(extra: &str) -> FileRollout {
        let text = format!(
            "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[upstreams.b]\nendpoints = [\"127.0.0.1:2\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"a\" }}, {{ upstream = \"b\", weight = 0 }}]\n[routes.rollout]\ncanary = \"b\"\nbaseline = \"a\"\nmin_requests = 100\nmax_error_rate = 0.05\n{extra}\n"
        );
        config::parse(std::path::Path::new("t.toml"), &text).unwrap().routes[0].rollout.clone().unwrap()
    }

    /// `n` requests, `errors` of them 5xx, all taking `latency`.
    fn window(n: u64, errors: u64, latency: Duration) -> Counts {
        let t = Tally::default();
        for i in 0..n {
            t.answered(if i < errors { 500 } else { 200 });
            t.timed(latency);
        }
        t.snapshot()
    }

    const FAST: Duration = Duration::from_millis(5);

    #[test]
    fn a_healthy_step_passes() {
        let r = rollout("max_p99 = \"100ms\"\nmax_error_rate_increase = 0.01");
        let j = judge(&r, &window(200, 2, FAST), &window(2000, 10, FAST), 1);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.canary_requests, 200);
    }

    #[test]
    fn too_many_errors_fail_with_the_measured_rate() {
        let j = judge(&rollout(""), &window(200, 40, FAST), &window(200, 0, FAST), 1);
        let Verdict::Fail(reason) = j.verdict else { panic!("{j:?}") };
        assert!(reason.contains("error rate 0.2000 > max_error_rate 0.05"), "{reason}");
    }

    #[test]
    fn a_slow_canary_fails_on_p99() {
        let r = rollout("max_p99 = \"100ms\"");
        let j = judge(&r, &window(200, 0, Duration::from_millis(300)), &window(200, 0, FAST), 1);
        let Verdict::Fail(reason) = j.verdict else { panic!("{j:?}") };
        assert!(reason.contains("p99") && reason.contains("> max_p99 100.0 ms"), "{reason}");
    }

    #[test]
    fn an_error_rate_increase_over_the_baseline_fails() {
        let r = rollout("max_error_rate_increase = 0.01");
        // 4% is under max_error_rate (5%) but 3 points above the baseline's 1%.
        let j = judge(&r, &window(1000, 40, FAST), &window(1000, 10, FAST), 1);
        let Verdict::Fail(reason) = j.verdict else { panic!("{j:?}") };
        assert!(reason.contains("max_error_rate_increase"), "{reason}");
        // The same canary beside an equally bad baseline passes.
        assert_eq!(judge(&r, &window(1000, 40, FAST), &window(1000, 35, FAST), 1).verdict, Verdict::Pass);
        // A baseline without traffic (the 100% step) is no comparison.
        assert_eq!(judge(&r, &window(1000, 40, FAST), &Counts::default(), 1).verdict, Verdict::Pass);
    }

    #[test]
    fn a_step_short_of_traffic_waits_then_fails() {
        let r = rollout("");
        let short = window(99, 0, FAST);
        for judged in 1..MAX_WAIT_INTERVALS {
            assert_eq!(judge(&r, &short, &Counts::default(), judged).verdict, Verdict::Wait);
        }
        let j = judge(&r, &short, &Counts::default(), MAX_WAIT_INTERVALS);
        let Verdict::Fail(reason) = j.verdict else { panic!("{j:?}") };
        assert!(reason.contains("only 99 canary requests after 10 intervals"), "{reason}");
    }
}
