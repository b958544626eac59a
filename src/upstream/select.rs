//! Endpoint choice inside an upstream: the less loaded of two random endpoints
//! ("power of two choices"), which avoids both herd behaviour and a global scan.

use std::sync::Arc;

use super::Endpoint;

pub(crate) fn least_of_two(endpoints: &[Arc<Endpoint>]) -> Option<&Arc<Endpoint>> {
    match endpoints.len() {
        0 => None,
        1 => Some(&endpoints[0]),
        n => {
            let a = fastrand::usize(..n);
            // A second, different endpoint: offset by 1..n so it never equals `a`.
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            let (ea, eb) = (&endpoints[a], &endpoints[b]);
            Some(if eb.in_flight() < ea.in_flight() { eb } else { ea })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_idle_endpoint_and_spreads_load() {
        let eps: Vec<Arc<Endpoint>> =
            (0..3).map(|i| Arc::new(Endpoint::new(format!("127.0.0.1:{}", 1000 + i).parse().unwrap(), "x"))).collect();
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
        let mut hits = [0; 3];
        for _ in 0..3000 {
            let e = least_of_two(&eps).unwrap();
            hits[eps.iter().position(|x| Arc::ptr_eq(x, e)).unwrap()] += 1;
        }
        // The busy endpoint only wins when both picks... can't both be it, so never.
        assert_eq!(hits[0], 0, "{hits:?}");
        assert!(hits[1] > 1000 && hits[2] > 1000, "{hits:?}");
    }
}
