//! Per-IP limits of the storefront's sensitive endpoints (kept in the shared state, so they
//! live apart from the handlers that take them).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// Per-IP limits against guessing and abuse on the storefront's sensitive endpoints.
pub struct ShopLimits {
    /// `POST /order` (order id + email guessing).
    pub order_lookup: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /dashboard` (key guessing).
    pub dashboard: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /api/orders` (order spam).
    pub create_order: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /api/orders` from every address together: [`ORDERS_PER_MINUTE`]. Each order is
    /// a row kept and a call to PayPal's API under the operator's account, and the per-address
    /// limit alone let many addresses (an IPv6 block has many /64s) make them without end.
    pub create_order_all: DefaultDirectRateLimiter,
    /// `POST /api/orders` from addresses that made one in the last [`REPEAT_WINDOW_MINUTES`],
    /// together: half of [`ORDERS_PER_MINUTE`] (see [`ShopLimits::shared_allowance`]).
    pub create_order_repeat: DefaultDirectRateLimiter,
    /// When each address last had an order taken, for [`REPEAT_WINDOW_MINUTES`] (at most
    /// what the shared allowance takes in that time: ~660 entries).
    order_seen: std::sync::Mutex<std::collections::HashMap<IpAddr, std::time::Instant>>,
    /// `POST /api/orders/{id}/capture` (each call may reach PayPal).
    pub capture: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /webhooks/paypal` (each delivery that looks like an event costs a call to
    /// PayPal's verify API): [`WEBHOOKS_PER_MINUTE`].
    pub webhook: DefaultKeyedRateLimiter<IpAddr>,
    /// `POST /api/keys/rotate` and the dashboard's "Replace this key" (each needs a key).
    pub rotate: DefaultKeyedRateLimiter<IpAddr>,
    /// The opt-out links of notices (token guessing).
    pub opt_out: DefaultKeyedRateLimiter<IpAddr>,
    /// Replacements of one key (by its id), whatever the addresses they come from: each one
    /// mails the key's owner, so a $1 key replaced from many addresses was a way to flood any
    /// address with notices (found by an independent check). [`ROTATIONS_PER_HOUR`].
    pub rotate_key: DefaultKeyedRateLimiter<String>,
}

/// Replacements of one key allowed in a row, and again per hour after them: a customer
/// replacing a key that leaked (and once more for a slip) is far inside it.
pub const ROTATIONS_PER_HOUR: u32 = 5;

/// New orders taken a minute from all addresses together (a burst of as many, then one a second):
/// far above what a small shop sells, far below what would fill its disk or get its PayPal
/// account throttled.
pub const ORDERS_PER_MINUTE: u32 = 60;

/// How long after an order an address's next ones count as repeats.
pub const REPEAT_WINDOW_MINUTES: u64 = 10;
const REPEAT_WINDOW: std::time::Duration =
    std::time::Duration::from_secs(REPEAT_WINDOW_MINUTES * 60);

/// Webhook deliveries taken per address and minute. PayPal delivers a few a minute from any one
/// of its addresses, retries included; a burst of a hundred from one address is not PayPal.
pub const WEBHOOKS_PER_MINUTE: u32 = 60;

impl ShopLimits {
    /// Whether a new order from `ip` may take the shared allowance of all addresses: an
    /// address's first order in [`REPEAT_WINDOW_MINUTES`] takes only [`ORDERS_PER_MINUTE`];
    /// its next ones must also fit in half of it, shared by every address ordering again. A
    /// handful of addresses each kept at its own limit took the whole allowance, and real
    /// buyers met 503 (found by an independent check: 7 addresses are enough); now they take
    /// half, and the other half stays for addresses that have not ordered lately — what a
    /// buyer is — unless as many new addresses come every few minutes.
    ///
    /// An address counts as having ordered once an order of it was taken: one refused here
    /// made its buyer's next try a repeat (found by a re-check).
    pub fn shared_allowance(&self, ip: IpAddr) -> bool {
        let key = limit_key(ip);
        let now = std::time::Instant::now();
        let repeat = self
            .seen()
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < REPEAT_WINDOW);
        if repeat && self.create_order_repeat.check().is_err() {
            return false;
        }
        if self.create_order_all.check().is_err() {
            return false;
        }
        self.seen().insert(key, now);
        true
    }

    fn seen(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, std::time::Instant>> {
        self.order_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forget addresses idle long enough to be back at full allowance (bounded memory).
    pub fn prune(&self) {
        self.order_lookup.retain_recent();
        self.dashboard.retain_recent();
        self.create_order.retain_recent();
        let now = std::time::Instant::now();
        self.seen()
            .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        self.capture.retain_recent();
        self.webhook.retain_recent();
        self.rotate.retain_recent();
        self.opt_out.retain_recent();
        self.rotate_key.retain_recent();
    }
}

/// The key per-IP limits count by: the address, or its /64 for IPv6 (one customer typically
/// holds a whole /64, and rotating within it must not reset the limit).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::V6(std::net::Ipv6Addr::from(seg))
        }
    }
}

fn per_minute(n: u32) -> DefaultKeyedRateLimiter<IpAddr> {
    DefaultKeyedRateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
    ))
}

impl Default for ShopLimits {
    fn default() -> Self {
        ShopLimits {
            order_lookup: per_minute(10),
            dashboard: per_minute(20),
            create_order: per_minute(10),
            create_order_all: DefaultDirectRateLimiter::direct(Quota::per_minute(
                NonZeroU32::new(ORDERS_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
            )),
            create_order_repeat: DefaultDirectRateLimiter::direct(Quota::per_minute(
                NonZeroU32::new(ORDERS_PER_MINUTE / 2).unwrap_or(NonZeroU32::MIN),
            )),
            order_seen: std::sync::Mutex::default(),
            capture: per_minute(30),
            webhook: per_minute(WEBHOOKS_PER_MINUTE),
            rotate: per_minute(10),
            opt_out: per_minute(20),
            rotate_key: DefaultKeyedRateLimiter::keyed(Quota::per_hour(
                NonZeroU32::new(ROTATIONS_PER_HOUR).unwrap_or(NonZeroU32::MIN),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    /// Addresses ordering again take half the allowance at most; an address whose order the
    /// allowance refused has not ordered (a re-check: its buyer's next try was a repeat).
    #[test]
    fn repeats_take_half_and_a_refused_order_is_no_order() {
        let limits = ShopLimits::default();
        let a = ip(1);
        assert!(limits.shared_allowance(a), "its first");
        for n in 0..ORDERS_PER_MINUTE / 2 {
            assert!(limits.shared_allowance(a), "repeat {n}");
        }
        assert!(!limits.shared_allowance(a), "repeats have had half");
        let taken = ORDERS_PER_MINUTE / 2 + 1;
        for n in 0..ORDERS_PER_MINUTE - taken {
            assert!(limits.shared_allowance(ip(100 + n)), "new address {n}");
        }
        let late = ip(99);
        assert!(
            !limits.shared_allowance(late),
            "the whole allowance is taken"
        );
        // One comes back a second (the repeats' half one every two): a new address's order,
        // not a repeat's.
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        assert!(limits.shared_allowance(late), "still a new address");
    }
}
