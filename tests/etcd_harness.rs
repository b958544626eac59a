//! The fleet tests' etcd harness (tests/support/etcd.rs) against the real etcd and the
//! etcd-client crate: a put is read back, a gate passes traffic, cuts it and heals, and a
//! stopped etcd restarts with its data. Skipped without etcd, except under CI.

mod support;

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use support::etcd::{Etcd, EtcdGate};

/// Every etcd call here is bounded: a hang fails the test, it never stalls the run.
const CALL: Duration = Duration::from_secs(5);

/// No client-wide timeout (see docs/design/fleet.md §1): a short connect timeout, and each
/// call wrapped in its own `tokio::time::timeout`.
async fn connect(url: &str) -> Client {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    tokio::time::timeout(CALL, Client::connect([url], Some(options)))
        .await
        .expect("connect: not within 5 s")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

async fn put(client: &mut Client, key: &str, value: &str) {
    tokio::time::timeout(CALL, client.put(key, value, None))
        .await
        .expect("put: not within 5 s")
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// The value under `key` (`None` when absent), or the error as text, within `budget`.
async fn get(client: &mut Client, key: &str, budget: Duration) -> Result<Option<String>, String> {
    match tokio::time::timeout(budget, client.get(key, None)).await {
        Err(_) => Err(format!("get {key}: not within {budget:?}")),
        Ok(Err(e)) => Err(format!("get {key}: {e}")),
        Ok(Ok(resp)) => Ok(resp.kvs().first().map(|kv| kv.value_str().unwrap().to_string())),
    }
}

#[tokio::test]
async fn a_put_is_read_back_and_survives_a_restart() {
    let Some(mut etcd) = Etcd::start() else { return };
    assert!(etcd.url().starts_with("http://127.0.0.1:"), "{}", etcd.url());
    assert!(![2379, 2380].contains(&etcd.port()));

    let mut client = connect(&etcd.url()).await;
    put(&mut client, "/sy/test/greeting", "hello").await;
    assert_eq!(get(&mut client, "/sy/test/greeting", CALL).await, Ok(Some("hello".into())));
    assert_eq!(get(&mut client, "/sy/test/absent", CALL).await, Ok(None));

    // An outage: etcd is gone and calls fail (or hang, bounded) ...
    etcd.stop();
    let during = get(&mut client, "/sy/test/greeting", Duration::from_secs(2)).await;
    assert!(during.is_err(), "etcd is stopped, yet: {during:?}");

    // ... and it comes back on the same port with the same data.
    let port = etcd.port();
    etcd.restart();
    assert_eq!(etcd.port(), port);
    let mut fresh = connect(&etcd.url()).await;
    assert_eq!(get(&mut fresh, "/sy/test/greeting", CALL).await, Ok(Some("hello".into())), "{}", etcd.log());
}

#[tokio::test]
async fn a_gate_forwards_cuts_and_heals() {
    let Some(etcd) = Etcd::start() else { return };
    let gate = EtcdGate::new(etcd.port());
    assert_ne!(gate.url(), etcd.url());

    let mut client = connect(&gate.url()).await;
    put(&mut client, "/sy/test/through-the-gate", "yes").await;
    assert_eq!(get(&mut client, "/sy/test/through-the-gate", CALL).await, Ok(Some("yes".into())));
    assert!(gate.live_connections() >= 1, "the client's connection goes through the gate");

    // Partitioned: the live connection is closed and reconnecting is refused.
    gate.cut();
    assert_eq!(gate.live_connections(), 0);
    let cut = get(&mut client, "/sy/test/through-the-gate", Duration::from_secs(2)).await;
    assert!(cut.is_err(), "the gate is cut, yet: {cut:?}");
    let mut during = connect(&gate.url()).await;
    let refused = get(&mut during, "/sy/test/through-the-gate", Duration::from_secs(2)).await;
    assert!(refused.is_err(), "the gate is cut, yet a new client got: {refused:?}");
    // The cut is the gate's alone: etcd itself still answers.
    let mut direct = connect(&etcd.url()).await;
    put(&mut direct, "/sy/test/written-while-cut", "1").await;

    // Healed: a new client gets through and sees what was written meanwhile.
    gate.heal();
    let mut healed = connect(&gate.url()).await;
    assert_eq!(get(&mut healed, "/sy/test/written-while-cut", CALL).await, Ok(Some("1".into())));
}

/// Two gates on one etcd partition independently: cutting one leaves the other open.
#[tokio::test]
async fn gates_are_independent() {
    let Some(etcd) = Etcd::start() else { return };
    let (a, b) = (EtcdGate::new(etcd.port()), EtcdGate::new(etcd.port()));
    let (mut via_a, mut via_b) = (connect(&a.url()).await, connect(&b.url()).await);
    put(&mut via_a, "/sy/test/k", "v").await;
    a.cut();
    assert!(get(&mut via_a, "/sy/test/k", Duration::from_secs(2)).await.is_err());
    assert_eq!(get(&mut via_b, "/sy/test/k", CALL).await, Ok(Some("v".into())));
}
