//! Arbitrary weights and sticky keys through the split: share resolution, the
//! per-request stride split and the rendezvous sticky assignment.
//!
//! Must never happen: a panic; shares that do not add up to the resolution; a backend
//! of weight 0 picked by the split or given a sticky key; a sticky key whose backend
//! depends on anything but (key, shares).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::routing::{resolve_shares, sticky, Split, RESOLUTION};

#[derive(Debug, Arbitrary)]
struct Input {
    weights: Vec<u16>,
    /// Hundredths added to each weight (decimal weights).
    fractions: Vec<u8>,
    keys: Vec<Vec<u8>>,
    picks: u8,
}

fuzz_target!(|input: Input| {
    let weights: Vec<f64> = input
        .weights
        .iter()
        .take(16)
        .enumerate()
        .map(|(i, w)| f64::from(*w) + f64::from(input.fractions.get(i).copied().unwrap_or(0) % 100) / 100.0)
        .collect();
    if weights.is_empty() || weights.iter().sum::<f64>() <= 0.0 {
        return; // validation refuses these before they reach the split
    }
    let shares = resolve_shares(&weights);
    assert_eq!(shares.len(), weights.len());
    assert_eq!(shares.iter().sum::<u32>(), RESOLUTION, "{weights:?} -> {shares:?}");
    for (w, s) in weights.iter().zip(&shares) {
        if *w == 0.0 {
            assert_eq!(*s, 0, "weight 0 got a share: {weights:?} -> {shares:?}");
        }
    }
    let split = Split::compile(&shares);
    for _ in 0..input.picks {
        let i = split.pick();
        assert!(shares[i] > 0, "picked a zero share: {shares:?}");
    }
    let seeds: Vec<u64> = (0..shares.len()).map(|i| sticky::backend_seed("fuzz", &format!("u{i}"))).collect();
    for key in input.keys.iter().take(32) {
        let h = sticky::key_hash(key);
        let pick = sticky::assign(h, seeds.iter().copied().zip(shares.iter().copied()));
        let i = pick.expect("some share is positive");
        assert!(shares[i] > 0, "sticky key on a zero share");
        assert_eq!(pick, sticky::assign(h, seeds.iter().copied().zip(shares.iter().copied())), "not deterministic");
    }
});
