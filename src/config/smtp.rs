//! `email.smtp_url` read as the mailer reads it (lettre's URL form), so that `check-config`
//! and `serve` refuse what the mailer would: a URL lettre refuses left every mail queued with
//! only a line in the log at start (found by an independent check: `?tls=starttls`, a password
//! with a `/` in it). And a password sent where anyone on the way may read it.

/// What is wrong with `url` as `email.smtp_url`, if anything. Never echoes the URL: it carries
/// the password.
pub(super) fn problem(url: &str) -> Option<String> {
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Some("email.smtp_url must start with smtp:// or smtps://".into());
    }
    if let Err(e) = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url) {
        return Some(format!(
            "email.smtp_url cannot be used ({e}): the form is \
             smtp://USER:PASSWORD@HOST:587?tls=required (STARTTLS) or \
             smtps://USER:PASSWORD@HOST:465 (`tls` takes required or opportunistic), and a / # % \
             @ : ? in the user or the password must be percent-encoded (%2F %23 %25 %40 %3A %3F)"
        ));
    }
    let parsed = url::Url::parse(url).ok()?;
    // `opportunistic` goes on in clear when the server offers no STARTTLS, as one in the middle
    // can make it seem. The first `tls` is the one lettre reads (a later `tls=required` passed
    // this check while the password could go in clear; found by an independent check).
    let tls = parsed.scheme() == "smtps"
        || parsed
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .is_some_and(|(_, v)| v == "required");
    if parsed.password().is_some() && !tls && !nearby(parsed.host_str().unwrap_or_default()) {
        return Some(
            "email.smtp_url would send its password without TLS, readable on the way to the \
             server: add ?tls=required (STARTTLS, port 587) or use smtps:// (port 465); a relay \
             on this machine or a private network (a private address, or a name without a dot \
             or under .internal, .local, .lan, .home.arpa) may go without"
                .into(),
        );
    }
    None
}

/// Whether `host` is on this machine or a private network, where a password in clear reaches
/// no one on the Internet's way: a loopback, private, link-local or shared (CGNAT, as VPNs such
/// as Tailscale use) address, or a name a private network resolves — without a dot (a
/// docker-compose service, `/etc/hosts`) or under a suffix kept for such networks. A relay on
/// the VPS's LAN or VPC was refused with no way round (found by an independent check).
fn nearby(host: &str) -> bool {
    // `smtp:` is not a scheme the URL standard knows, so its host is read as a name even when
    // it is an address (found by a re-check: 127.0.0.1 was "another machine").
    let name = host.trim_matches(['[', ']']);
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || (a == 100 && (64..128).contains(&b))
            }
            std::net::IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || v6.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        };
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // A number the resolver reads as an address (`134744072`, `0x8080808` are 8.8.8.8; found by
    // a re-check) is not a name a private network gives: taken as another machine.
    let numeric = name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == 'x' || c == '.');
    !numeric && !name.contains('.')
        || [".internal", ".local", ".lan", ".home.arpa", ".localhost"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn what_the_mailer_cannot_use_or_should_not_is_said() {
        for fine in [
            "smtp://127.0.0.1:2525",
            "smtp://user:pw@mail.example.com:587?tls=required",
            "smtps://user:pw@mail.example.com",
            "smtp://user:pw@localhost:25",
            "smtp://user:pw@127.0.0.1:25",
            "smtp://user:pw@127.0.0.2:2525",
            "smtp://user:pw@[::1]:25",
            "smtp://AKIA:BKx%2Fab%2Bcd%3D@email-smtp.example.com:587?tls=required",
            "smtp://relay.example.com:25",
            "smtp://user:pw@10.0.0.5:25",
            "smtp://user:pw@172.20.0.3:25",
            "smtp://user:pw@192.168.1.10:587",
            "smtp://user:pw@100.101.102.103:25",
            "smtp://user:pw@169.254.0.9:25",
            "smtp://user:pw@[fd12:3456::1]:25",
            "smtp://user:pw@[fe80::1]:25",
            "smtp://user:pw@[::ffff:127.0.0.1]:25",
            "smtp://user:pw@0.0.0.0:25",
            "smtp://user:pw@mailrelay:25",
            "smtp://user:pw@mail.internal:25",
            "smtp://user:pw@relay.home.arpa:25",
            "smtp://user:pw@LOCALHOST:25",
        ] {
            assert_eq!(problem(fine), None, "{fine}");
        }
        for (bad, says) in [
            ("http://mail.example.com", "must start with"),
            ("smtp://127.0.0.1:2525?tls=starttls", "cannot be used"),
            ("smtp://127.0.0.1:2525?tls=Required", "cannot be used"),
            (
                "smtp://u:BKx/ab@mail.example.com:587?tls=required",
                "cannot be used",
            ),
            ("smtp://user:secret@mail.example.com:587", "without TLS"),
            ("smtp://user:secret@192.0.2.7:587", "without TLS"),
            ("smtp://user:secret@172.32.0.1:587", "without TLS"),
            ("smtp://user:secret@134744072:25", "without TLS"),
            ("smtp://user:secret@0x8080808:25", "without TLS"),
            ("smtp://user:secret@2130706433:25", "without TLS"),
            ("smtp://user:secret@100.128.0.1:587", "without TLS"),
            ("smtp://user:secret@[2001:db8::1]:587", "without TLS"),
            (
                "smtp://user:secret@mail.example.local.com:587",
                "without TLS",
            ),
            (
                "smtp://user:secret@mail.example.com:587?tls=opportunistic&tls=required",
                "without TLS",
            ),
            (
                "smtp://user:secret@mail.example.com:587?tls=opportunistic",
                "without TLS",
            ),
        ] {
            let p = problem(bad).unwrap_or_default();
            assert!(p.contains(says), "{bad}: {p}");
            assert!(!p.contains("secret") && !p.contains("BKx"), "{p}");
        }
    }
}
