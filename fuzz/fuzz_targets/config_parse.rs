//! Arbitrary bytes as a config file, through the whole pipeline (`check` and reloads run
//! exactly this: parse, decode, validate).
//!
//! Must never happen: a panic; an accepted config that breaks what compiling relies on
//! (a route without a positive weight, a backend or mirror naming an unknown upstream, a
//! rollout whose canary or baseline is not a backend, steps not increasing within
//! (0, 100]); a rejection without a position (every error has line and column >= 1).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match switchyard::config::parse(Path::new("fuzz.toml"), text) {
        Ok(cfg) => {
            let known = |name: &str| cfg.upstreams.iter().any(|u| u.name == name);
            for r in &cfg.routes {
                assert!(r.backends.iter().map(|b| b.weight).sum::<f64>() > 0.0, "accepted a route with no weight");
                assert!(r.backends.iter().all(|b| b.weight >= 0.0 && b.weight.is_finite()));
                assert!(r.backends.iter().all(|b| known(b.upstream.get_ref())));
                if let Some(m) = &r.mirror {
                    assert!(known(m.upstream.get_ref()));
                    assert!((0.0..=100.0).contains(&m.percent));
                }
                if let Some(ro) = &r.rollout {
                    let is_backend = |n: &str| r.backends.iter().any(|b| b.upstream.get_ref() == n);
                    assert!(is_backend(ro.canary.get_ref()) && is_backend(ro.baseline.get_ref()));
                    assert!(ro.steps.windows(2).all(|w| w[0] < w[1]));
                    assert!(ro.steps.iter().all(|s| *s > 0.0 && *s <= 100.0));
                }
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(e.line >= 1 && e.col >= 1, "{e}");
            }
        }
    }
});
