//! The watchdog's verdicts on an HTTP/1 connection between requests, on tokio's paused clock:
//! how long an idle keep-alive lasts from loopback (a reverse proxy) and from elsewhere, and
//! how long a head begun may take.

use std::sync::Arc;
use std::time::Duration;

use super::{Activity, KEEP_ALIVE};
use crate::server::Limits;

const LIMITS: Limits = Limits {
    max_connections: 100,
    header_timeout: Duration::from_secs(30),
    body_timeout: Duration::from_secs(60),
    idle_timeout: Duration::from_secs(60),
};

/// A connection that served one request and is now idle.
fn after_a_request(loopback: bool) -> Arc<Activity> {
    let a = Arc::new(Activity::new(loopback));
    drop(a.begin());
    a
}

async fn wait(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn a_proxy_on_loopback_keeps_an_idle_connection_longer_than_proxies_keep_theirs() {
    let a = after_a_request(true);
    wait(KEEP_ALIVE.as_secs() - 1).await;
    assert_eq!(a.verdict(&LIMITS), None);
    wait(2).await;
    assert_eq!(a.verdict(&LIMITS), Some("idle"));
}

#[tokio::test(start_paused = true)]
async fn a_client_elsewhere_keeps_an_idle_connection_for_the_header_timeout() {
    let a = after_a_request(false);
    wait(29).await;
    assert_eq!(a.verdict(&LIMITS), None);
    wait(2).await;
    assert_eq!(a.verdict(&LIMITS), Some("idle"));
}

#[tokio::test(start_paused = true)]
async fn a_head_begun_must_be_whole_within_the_header_timeout_wherever_it_comes_from() {
    for loopback in [true, false] {
        let a = after_a_request(loopback);
        // From elsewhere the idle bound runs from the last answer, as hyper's timer did: the
        // head begins at once there.
        wait(if loopback { 10 } else { 0 }).await;
        a.read();
        wait(29).await;
        assert_eq!(a.verdict(&LIMITS), None, "loopback {loopback}");
        // A later piece of the same head does not restart its clock.
        a.read();
        wait(2).await;
        assert_eq!(
            a.verdict(&LIMITS),
            Some("a request's headers did not arrive within the header timeout"),
            "loopback {loopback}"
        );
        // A request that begins stops the clock.
        let b = after_a_request(loopback);
        b.read();
        let request = b.begin();
        wait(31).await;
        assert_eq!(b.verdict(&LIMITS), None, "loopback {loopback}");
        drop(request);
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_said_close_keeps_the_short_bound_from_loopback_too() {
    let a = after_a_request(true);
    a.ends_after_answer
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait(31).await;
    assert_eq!(a.verdict(&LIMITS), Some("idle"));
}
