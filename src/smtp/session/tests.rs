use super::*;
use crate::config::{ExternalPolicy, SmtpConfig};

fn policy(external: ExternalPolicy) -> Arc<Policy> {
    let cfg = SmtpConfig {
        protected_domains: vec!["example.org".into()],
        external,
        ..SmtpConfig::default()
    };
    Arc::new(Policy::from_config(&cfg).unwrap())
}

fn session(kind: ListenerKind, tls: bool) -> Session {
    let cfg = SessionConfig {
        kind,
        hostname: "writ.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        tls_available: true,
    };
    Session::new(cfg, policy(ExternalPolicy::Plaintext), tls)
}

fn ok() -> Result<Reply, UpstreamFailure> {
    Ok(Reply::new(250, "2.0.0 OK"))
}

fn code(step: &Step) -> u16 {
    match step {
        Step::Reply(r) | Step::Close(r) | Step::StartTls(r) | Step::ReadData(r, _) => r.code,
        other => panic!("expected a reply, got {other:?}"),
    }
}

/// A relay session through MAIL and one accepted RCPT.
fn relay_in_transaction() -> Session {
    let mut s = session(ListenerKind::Relay, false);
    assert_eq!(code(&s.command(b"EHLO mta.example")), 250);
    assert_eq!(
        s.command(b"MAIL FROM:<a@ext.example>"),
        Step::Upstream {
            open: true,
            line: "MAIL FROM:<a@ext.example>".into()
        }
    );
    assert_eq!(code(&s.upstream_reply(ok())), 250);
    assert!(matches!(
        s.command(b"RCPT TO:<bob@example.org>"),
        Step::Upstream { open: false, .. }
    ));
    assert_eq!(code(&s.upstream_reply(ok())), 250);
    s
}

#[test]
fn relay_transaction_in_lockstep() {
    let mut s = relay_in_transaction();
    assert!(matches!(
        s.command(b"DATA"),
        Step::ReadData(_, Delivery::SealForOrganisation)
    ));
    assert_eq!(s.message_received(DataFlags::default()), Ok(()));
    // The provider's final reply is the client's.
    let r = s.delivered(Ok(Reply::new(250, "2.0.0 queued as ABC")));
    assert_eq!(r, Reply::new(250, "2.0.0 queued as ABC"));
    // A new transaction reuses the open provider connection.
    assert!(matches!(
        s.command(b"MAIL FROM:<>"),
        Step::Upstream { open: false, .. }
    ));
}

#[test]
fn spf_identities_are_the_greeting_and_the_transactions_reverse_path() {
    let mut s = relay_in_transaction();
    assert_eq!(s.sender_identities(), ("mta.example", "a@ext.example"));
    // A new greeting ends the transaction: no reverse-path until the next
    // MAIL, whose own (here the null path) is then the one.
    s.command(b"HELO other.example");
    s.upstream_reply(ok());
    assert_eq!(s.sender_identities(), ("other.example", ""));
    s.command(b"MAIL FROM:<>");
    assert_eq!(s.sender_identities(), ("other.example", ""));
    s.upstream_reply(ok());
    assert_eq!(s.sender_identities(), ("other.example", ""));
}

#[test]
fn relay_is_never_open() {
    let mut s = relay_in_transaction();
    let step = s.command(b"RCPT TO:<someone@elsewhere.example>");
    assert_eq!(code(&step), 550);
    assert!(format!("{step:?}").contains("5.7.1"));
}

#[test]
fn provider_replies_are_mirrored_per_recipient() {
    let mut s = relay_in_transaction();
    assert!(matches!(
        s.command(b"RCPT TO:<nobody@example.org>"),
        Step::Upstream { .. }
    ));
    let refused = Reply::new(550, "5.1.1 no such user");
    assert_eq!(s.upstream_reply(Ok(refused.clone())), Step::Reply(refused));
    // The earlier recipient still stands: DATA proceeds.
    assert_eq!(code(&s.command(b"DATA")), 354);
}

#[test]
fn classes_never_mix_in_one_transaction() {
    let mut s = session(ListenerKind::Submission, true);
    s.command(b"EHLO c");
    s.command(b"AUTH PLAIN AGEAYg==");
    assert_eq!(
        code(&s.upstream_reply(Ok(Reply::new(235, "2.7.0 ok")))),
        235
    );
    s.command(b"MAIL FROM:<a@example.org>");
    s.upstream_reply(ok());
    s.command(b"RCPT TO:<b@example.org>");
    s.upstream_reply(ok());
    let step = s.command(b"RCPT TO:<x@outside.example>");
    assert_eq!(code(&step), 452);
    assert!(format!("{step:?}").contains("4.5.3"));
}

#[test]
fn submission_requires_tls_then_auth_before_mail() {
    let mut s = session(ListenerKind::Submission, false);
    let ehlo = s.command(b"EHLO c");
    let text = format!("{ehlo:?}");
    assert!(
        text.contains("STARTTLS") && !text.contains("AUTH"),
        "{text}"
    );
    assert_eq!(code(&s.command(b"AUTH PLAIN AGEAYg==")), 530);
    assert_eq!(code(&s.command(b"MAIL FROM:<a@example.org>")), 530);
    assert_eq!(code(&s.command(b"STARTTLS")), 220);
    s.tls_started();
    assert_eq!(
        code(&s.command(b"MAIL FROM:<a@example.org>")),
        503,
        "EHLO again after TLS"
    );
    let ehlo = format!("{:?}", s.command(b"EHLO c"));
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN XOAUTH2") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(code(&s.command(b"MAIL FROM:<a@example.org>")), 530);
    // AUTH LOGIN: a multi-step exchange relayed to the provider.
    assert_eq!(
        s.command(b"AUTH LOGIN"),
        Step::Upstream {
            open: true,
            line: "AUTH LOGIN".into()
        }
    );
    assert_eq!(
        code(&s.upstream_reply(Ok(Reply::new(334, "VXNlcm5hbWU6")))),
        334
    );
    assert!(s.in_auth());
    assert_eq!(
        s.auth_line(b"dXNlcg=="),
        Step::Upstream {
            open: false,
            line: "dXNlcg==".into()
        }
    );
    s.upstream_reply(Ok(Reply::new(334, "UGFzc3dvcmQ6")));
    s.auth_line(b"cGFzcw==");
    assert_eq!(
        code(&s.upstream_reply(Ok(Reply::new(235, "2.7.0 Authentication successful")))),
        235
    );
    assert!(!s.in_auth());
    assert!(matches!(
        s.command(b"MAIL FROM:<a@example.org>"),
        Step::Upstream { open: false, .. }
    ));
}

#[test]
fn failed_auth_does_not_authenticate() {
    let mut s = session(ListenerKind::Submissions, true);
    s.command(b"EHLO c");
    s.command(b"AUTH PLAIN AGEAYg==");
    assert_eq!(
        code(&s.upstream_reply(Ok(Reply::new(535, "5.7.8 bad credentials")))),
        535
    );
    assert_eq!(code(&s.command(b"MAIL FROM:<a@example.org>")), 530);
}

#[test]
fn provider_down_is_a_4xx() {
    let mut s = session(ListenerKind::Relay, false);
    s.command(b"EHLO c");
    s.command(b"MAIL FROM:<a@b.example>");
    let step = s.upstream_reply(Err(UpstreamFailure::Unavailable));
    assert_eq!(code(&step), 451);
    // Next MAIL tries to open the connection again.
    assert!(matches!(
        s.command(b"MAIL FROM:<a@b.example>"),
        Step::Upstream { open: true, .. }
    ));
}

#[test]
fn seal_failure_fails_closed_with_451() {
    let mut s = relay_in_transaction();
    s.command(b"DATA");
    assert_eq!(s.message_received(DataFlags::default()), Ok(()));
    let r = s.delivered(Err(UpstreamFailure::SealFailed));
    assert_eq!(r.code, 451);
    assert!(r.render().contains("4.3.0"));
    let r = s.delivered(Err(UpstreamFailure::Unavailable));
    assert!(r.render().starts_with("451 4.4.2"));
}

#[test]
fn bad_data_is_refused_and_the_provider_reset() {
    for (flags, want) in [
        (
            DataFlags {
                bare_lf: true,
                ..DataFlags::default()
            },
            554,
        ),
        (
            DataFlags {
                nul: true,
                ..DataFlags::default()
            },
            554,
        ),
        (
            DataFlags {
                too_large: true,
                ..DataFlags::default()
            },
            552,
        ),
    ] {
        let mut s = relay_in_transaction();
        s.command(b"DATA");
        let step = s.message_received(flags).unwrap_err();
        assert!(matches!(step, Step::Reply(_)), "the session goes on");
        assert_eq!(code(&step), want);
        assert_eq!(
            code(&s.command(b"RCPT TO:<b@example.org>")),
            503,
            "transaction is gone"
        );
    }
}

#[test]
fn a_bare_newline_end_or_runaway_data_closes_the_connection() {
    // Nothing after a smuggler's end of data may be read as a command.
    for (flags, want) in [
        (
            DataFlags {
                bare_lf: true,
                bare_newline_end: true,
                ..DataFlags::default()
            },
            554,
        ),
        (
            DataFlags {
                too_large: true,
                runaway: true,
                ..DataFlags::default()
            },
            552,
        ),
    ] {
        let mut s = relay_in_transaction();
        s.command(b"DATA");
        assert!(Session::refuses(&flags));
        match s.message_received(flags) {
            Err(Step::Close(r)) => assert_eq!(r.code, want, "{r:?}"),
            other => panic!("{flags:?}: expected a close, got {other:?}"),
        }
    }
    // Lone CRs and 8-bit data alone are no reason.
    assert!(!Session::refuses(&DataFlags {
        eight_bit: true,
        ..DataFlags::default()
    }));
}

#[test]
fn eight_bit_data_without_8bitmime_is_accepted() {
    // Decided: RFC 6152 §3 lets a server accept it (Postfix and Exchange
    // do); the body reaches the provider sealed, as 7-bit armor.
    let mut s = relay_in_transaction();
    s.command(b"DATA");
    let flags = DataFlags {
        eight_bit: true,
        ..DataFlags::default()
    };
    assert_eq!(s.message_received(flags), Ok(()));
}

#[test]
fn out_of_order_and_malformed_commands_keep_the_session() {
    let mut s = session(ListenerKind::Relay, false);
    assert_eq!(code(&s.command(b"MAIL FROM:<a@b.example>")), 503);
    s.command(b"EHLO c");
    assert_eq!(code(&s.command(b"RCPT TO:<b@example.org>")), 503);
    assert_eq!(code(&s.command(b"DATA")), 503);
    assert_eq!(code(&s.command(b"FOO BAR")), 500);
    assert_eq!(code(&s.command(b"MAIL FROM:broken")), 501);
    assert_eq!(code(&s.command(b"MAIL FROM:<a@b.example> SIZE=5000")), 552);
    assert_eq!(code(&s.command(b"AUTH PLAIN x")), 502);
    assert_eq!(code(&s.command(b"BDAT 10 LAST")), 502);
    assert_eq!(code(&s.command(b"NOOP")), 250);
    assert!(matches!(s.command(b"QUIT"), Step::Close(_)));
}

#[test]
fn too_many_recipients() {
    let mut s = relay_in_transaction();
    for i in 0..2 {
        s.command(format!("RCPT TO:<r{i}@example.org>").as_bytes());
        s.upstream_reply(ok());
    }
    assert_eq!(code(&s.command(b"RCPT TO:<r9@example.org>")), 452);
}

#[test]
fn external_policy_reject_and_seal() {
    let cfg = SessionConfig {
        kind: ListenerKind::Submissions,
        hostname: "w".into(),
        max_message_size: 1000,
        max_recipients: 10,
        tls_available: true,
    };
    let mut s = Session::new(cfg, policy(ExternalPolicy::Reject), true);
    s.command(b"EHLO c");
    s.command(b"AUTH PLAIN x");
    s.upstream_reply(Ok(Reply::new(235, "ok")));
    s.command(b"MAIL FROM:<a@example.org>");
    s.upstream_reply(ok());
    assert_eq!(code(&s.command(b"RCPT TO:<x@outside.example>")), 550);
}

#[test]
fn authenticated_session_without_its_provider_connection_closes_with_421() {
    let mut s = session(ListenerKind::Submission, true);
    s.command(b"EHLO c");
    s.command(b"AUTH PLAIN AGEAYg==");
    s.upstream_reply(Ok(Reply::new(235, "2.7.0 ok")));
    s.command(b"MAIL FROM:<a@example.org>");
    s.upstream_reply(ok());
    s.command(b"RCPT TO:<x@outside.example>");
    s.upstream_reply(ok());
    assert!(matches!(s.command(b"DATA"), Step::ReadData(..)));
    // The provider connection broke during DATA: a new one would not be
    // authenticated.
    assert_eq!(s.delivered(Err(UpstreamFailure::Unavailable)).code, 451);
    let step = s.command(b"MAIL FROM:<a@example.org>");
    assert!(matches!(&step, Step::Close(r) if r.code == 421), "{step:?}");
}

#[test]
fn twenty_protocol_errors_then_421_and_close() {
    let mut s = session(ListenerKind::Relay, false);
    for i in 0..MAX_ERRORS {
        let step = if i % 2 == 0 {
            s.command(b"FOO")
        } else {
            s.line_too_long()
        };
        assert!(
            matches!(&step, Step::Reply(r) if r.code >= 500),
            "{i}: {step:?}"
        );
    }
    // Good commands are not errors.
    assert_eq!(code(&s.command(b"NOOP")), 250);
    let step = s.command(b"DATA");
    assert!(matches!(&step, Step::Close(r) if r.code == 421), "{step:?}");
    assert!(format!("{step:?}").contains("4.7.0 Too many errors"));
}

#[test]
fn ehlo_in_a_transaction_resets_the_providers_transaction_too() {
    let mut s = relay_in_transaction();
    assert_eq!(
        s.command(b"EHLO again"),
        Step::Upstream {
            open: false,
            line: "RSET".into()
        }
    );
    assert_eq!(code(&s.upstream_reply(ok())), 250);
    assert!(!s.in_transaction());
    assert!(matches!(
        s.command(b"MAIL FROM:<a@ext.example>"),
        Step::Upstream { open: false, .. }
    ));
    s.upstream_reply(ok());
    // A provider that refuses the RSET is left: the next MAIL reconnects.
    assert!(matches!(s.command(b"HELO x"), Step::Upstream { .. }));
    let step = s.upstream_reply(Ok(Reply::new(500, "5.5.2 no")));
    assert_eq!(code(&step), 250);
    assert!(matches!(
        s.command(b"MAIL FROM:<a@ext.example>"),
        Step::Upstream { open: true, .. }
    ));
    // Outside a transaction EHLO is answered at once.
    let mut s = session(ListenerKind::Relay, false);
    assert_eq!(code(&s.command(b"EHLO c")), 250);
    assert_eq!(code(&s.command(b"EHLO c")), 250);
}

#[test]
fn starttls_is_refused_during_a_transaction() {
    let mut s = relay_in_transaction();
    assert_eq!(code(&s.command(b"STARTTLS")), 503);
    assert_eq!(code(&s.command(b"DATA")), 354, "the transaction goes on");
}

#[test]
fn an_overlong_sasl_response_cancels_the_exchange_at_the_provider() {
    let mut s = session(ListenerKind::Submissions, true);
    s.command(b"EHLO c");
    s.command(b"AUTH PLAIN");
    assert_eq!(code(&s.upstream_reply(Ok(Reply::new(334, "")))), 334);
    assert!(s.in_auth());
    assert_eq!(
        s.auth_line_too_long(),
        Step::Upstream {
            open: false,
            line: "*".into()
        }
    );
    assert!(!s.in_auth());
    let step = s.upstream_reply(Ok(Reply::new(501, "5.7.0 Authentication aborted")));
    assert_eq!(code(&step), 500);
    assert!(format!("{step:?}").contains("AUTH cancelled"));
    assert!(!s.in_auth());
    assert!(matches!(s.command(b"QUIT"), Step::Close(_)));
}

/// A recipient the provider refuses: the reply as the client gets it.
fn refused_rcpt(s: &mut Session, to: &str) -> Step {
    assert!(matches!(
        s.command(format!("RCPT TO:<{to}>").as_bytes()),
        Step::Upstream { .. }
    ));
    s.upstream_reply(Ok(Reply::new(550, "5.1.1 no such user")))
}

#[test]
fn recipients_the_provider_refuses_count_as_errors_deliveries_between_or_not() {
    let refused = Step::Reply(Reply::new(550, "5.1.1 no such user"));
    let mut s = relay_in_transaction();
    for _ in 0..MAX_ERRORS - 1 {
        assert_eq!(refused_rcpt(&mut s, "guess@example.org"), refused);
    }
    // A delivery does not start the count again (a probe would deliver
    // one now and then).
    assert_eq!(code(&s.command(b"DATA")), 354);
    assert_eq!(s.message_received(DataFlags::default()), Ok(()));
    assert_eq!(s.delivered(ok()).code, 250);
    assert!(matches!(
        s.command(b"MAIL FROM:<a@ext.example>"),
        Step::Upstream { .. }
    ));
    assert_eq!(code(&s.upstream_reply(ok())), 250);
    assert_eq!(refused_rcpt(&mut s, "guess@example.org"), refused);
    // Past the limit (writ's own refusals count too): 421, closed.
    let closed = refused_rcpt(&mut s, "guess@example.org");
    assert!(
        matches!(closed, Step::Close(ref r) if r.code == 421),
        "{closed:?}"
    );
    let mut s = relay_in_transaction();
    for _ in 0..MAX_ERRORS {
        assert_eq!(code(&s.command(b"RCPT TO:<x@elsewhere.example>")), 550);
    }
    assert!(matches!(
        s.command(b"RCPT TO:<x@elsewhere.example>"),
        Step::Close(_)
    ));
}

#[test]
fn credentials_the_provider_refuses_count_as_errors() {
    let mut s = session(ListenerKind::Submissions, true);
    s.command(b"EHLO c");
    for _ in 0..MAX_ERRORS {
        assert!(matches!(
            s.command(b"AUTH PLAIN AGEAYg=="),
            Step::Upstream { .. }
        ));
        let r = s.upstream_reply(Ok(Reply::new(535, "5.7.8 bad credentials")));
        assert_eq!(code(&r), 535);
    }
    assert!(matches!(
        s.command(b"AUTH PLAIN AGEAYg=="),
        Step::Upstream { .. }
    ));
    let r = s.upstream_reply(Ok(Reply::new(535, "5.7.8 bad credentials")));
    assert!(matches!(r, Step::Close(ref r) if r.code == 421), "{r:?}");
}
