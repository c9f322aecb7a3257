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
    // can make it seem.
    let tls = parsed.scheme() == "smtps"
        || parsed
            .query_pairs()
            .any(|(k, v)| k == "tls" && v == "required");
    let local = match parsed.host() {
        // `smtp:` is not a scheme the URL standard knows, so its host is read as a name even
        // when it is an address (found by a re-check: 127.0.0.1 was "another machine").
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if parsed.password().is_some() && !tls && !local {
        return Some(
            "email.smtp_url would send its password without TLS, readable on the way to the \
             server: add ?tls=required (STARTTLS, port 587) or use smtps:// (port 465)"
                .into(),
        );
    }
    None
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
