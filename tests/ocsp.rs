//! OCSP stapling from a file beside the certificate: a listener certificate's `ocsp`
//! response reaches clients that ask for one, a new file is picked up like a new
//! certificate, and a file that is not an OCSP response is a config error.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::pki::TestCa;
use support::*;

/// Two stand-in OCSP responses: successful, with (empty) response bytes; no client here
/// checks what they say.
const FIRST: &[u8] = &[0x30, 0x07, 0x0a, 0x01, 0x00, 0xa0, 0x02, 0x05, 0x00];
const SECOND: &[u8] = &[0x30, 0x07, 0x0a, 0x01, 0x00, 0xa0, 0x02, 0x04, 0x00];

async fn stapled(addr: SocketAddr) -> Vec<u8> {
    support::pki::stapled_unverified(addr, "a.test").await
}

fn config(ocsp: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[[server.tls]]\nlisten = \"127.0.0.1:0\"\ncerts = [{{ cert = \"a.pem\", key = \"a-key.pem\"{ocsp} }}, {{ cert = \"b.pem\", key = \"b-key.pem\" }}]\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstreams.u]\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\nbackends = [{{ upstream = \"u\" }}]\n"
    )
}

#[tokio::test]
async fn a_stapling_file_is_served_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ocsp ca");
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    ca.leaf(&["b.test"]).write(dir.path(), "b");
    std::fs::write(dir.path().join("a.ocsp"), FIRST).unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config(", ocsp = \"a.ocsp\"")).unwrap();
    let proxy = spawn_proxy_file(path, dir).await;
    let tls = proxy.tls_addrs[0];
    assert_eq!(stapled(tls).await, FIRST);

    // A refreshed response (a cron job's `openssl ocsp -respout`) is a watched file.
    std::fs::write(proxy.dir.path().join("a.ocsp"), SECOND).unwrap();
    let refreshed = || async { stapled(tls).await == SECOND };
    eventually("the new response stapled after the reload", Duration::from_secs(10), refreshed).await;

    // A half-written file is refused like any bad config: the last good one stays.
    std::fs::write(proxy.dir.path().join("a.ocsp"), &FIRST[..6]).unwrap();
    let refused = || async { proxy.app.controller.last_reload_error().is_some_and(|e| e.contains("a.ocsp")) };
    eventually("the half-written file refused", Duration::from_secs(5), refused).await;
    assert_eq!(stapled(tls).await, SECOND);
}

#[tokio::test]
async fn without_a_stapling_file_nothing_is_stapled() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ocsp ca");
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    ca.leaf(&["b.test"]).write(dir.path(), "b");
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config("")).unwrap();
    let proxy = spawn_proxy_file(path, dir).await;
    assert_eq!(stapled(proxy.tls_addrs[0]).await, Vec::<u8>::new());
}

#[test]
fn a_stapling_file_that_is_not_an_ocsp_response_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ocsp ca");
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    ca.leaf(&["b.test"]).write(dir.path(), "b");
    std::fs::write(dir.path().join("a.ocsp"), "-----BEGIN OCSP-----\n").unwrap();
    let path = dir.path().join("switchyard.toml");
    let text = config(", ocsp = \"a.ocsp\"");
    std::fs::write(&path, &text).unwrap();
    let errors = switchyard::config::load(&path).unwrap_err().to_string();
    let col = text.lines().nth(4).unwrap().find("\"a.ocsp\"").unwrap() + 1;
    assert!(errors.contains(&format!("switchyard.toml:5:{col}")), "{errors}");
    assert!(errors.contains("not a whole, successful DER OCSP response"), "{errors}");
    std::fs::remove_file(dir.path().join("a.ocsp")).unwrap();
    let errors = switchyard::config::load(&path).unwrap_err().to_string();
    assert!(errors.contains("a.ocsp"), "{errors}");
}
