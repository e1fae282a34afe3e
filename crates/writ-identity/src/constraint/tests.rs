use super::*;
use proptest::prelude::*;
use serde_json::json;

fn c(pointer: &str, rule: Value) -> Constraint {
    let mut obj = rule;
    obj["pointer"] = json!(pointer);
    serde_json::from_value(obj).unwrap()
}

/// Each row: constraint, arguments, expected outcome (None = allowed, Some(words) = denied
/// with a message containing the words).
#[test]
fn table() {
    let cases: Vec<(Constraint, Value, Option<&str>)> = vec![
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": 500}),
            None,
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": 500.0}),
            None,
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": 500.000001}),
            Some("amount 500.000001 is above the grant's maximum 500"),
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": "100"}),
            Some("must be a number, but it is text"),
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({}),
            Some("missing"),
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": null}),
            Some("must be a number"),
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": 1e300}),
            Some("amount 1e+300 is above the grant's maximum 500"),
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": -1e300}),
            None,
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": 18446744073709551615u64}),
            Some("is above the grant's maximum 500"),
        ),
        (
            c("/amount", json!({"rule": "at_least", "value": 0})),
            json!({"amount": -0.000001}),
            Some("amount -0.000001 is below the grant's minimum 0"),
        ),
        (
            c("/amount", json!({"rule": "at_least", "value": 0})),
            json!({"amount": 0}),
            None,
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@example.com"}),
            None,
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@EXAMPLE.com"}),
            None,
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@exаmple.com"}),
            Some("non-ASCII"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@example.com.evil.io"}),
            Some("not among"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@evil-example.com"}),
            Some("not among"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@sub.example.com"}),
            Some("not among"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["*.example.com"]}),
            ),
            json!({"to": "bob@sub.example.com"}),
            None,
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["*.example.com"]}),
            ),
            json!({"to": "bob@xexample.com"}),
            Some("not among"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "evil@x.io <bob@example.com>"}),
            Some("contains whitespace"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "bob@example.com@evil.io"}),
            Some("more than one '@'"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": "example.com"}),
            Some("not an e-mail"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": ["a@example.com", "b@example.com"]}),
            None,
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": ["a@example.com", "b@evil.io"]}),
            Some("evil.io"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": ["a@example.com", 5]}),
            Some("/to/1 must be text"),
        ),
        (
            c(
                "/to",
                json!({"rule": "email_domain_in", "domains": ["example.com"]}),
            ),
            json!({"to": []}),
            Some("empty list"),
        ),
        (
            c("/repo", json!({"rule": "glob", "pattern": "acme/*"})),
            json!({"repo": "acme/widgets"}),
            None,
        ),
        (
            c("/repo", json!({"rule": "glob", "pattern": "acme/*"})),
            json!({"repo": "acme/widgets/../../evil"}),
            Some("does not match"),
        ),
        (
            c("/repo", json!({"rule": "glob", "pattern": "acme/*"})),
            json!({"repo": "acmecorp/x"}),
            Some("does not match"),
        ),
        (
            c("/repo", json!({"rule": "glob", "pattern": "acme/**"})),
            json!({"repo": "acme/a/b"}),
            None,
        ),
        (
            c("/env", json!({"rule": "equals", "value": "staging"})),
            json!({"env": "staging"}),
            None,
        ),
        (
            c("/env", json!({"rule": "equals", "value": "staging"})),
            json!({"env": "Staging"}),
            Some("must be \"staging\""),
        ),
        (
            c("/n", json!({"rule": "equals", "value": 5})),
            json!({"n": "5"}),
            Some("must be 5"),
        ),
        (
            c(
                "/env",
                json!({"rule": "one_of", "values": ["dev", "staging"]}),
            ),
            json!({"env": "prod"}),
            Some("not one of"),
        ),
        (
            c("/body", json!({"rule": "max_length", "max": 3})),
            json!({"body": "héé"}),
            None,
        ),
        (
            c("/body", json!({"rule": "max_length", "max": 3})),
            json!({"body": "abcd"}),
            Some("limit is 3"),
        ),
        (
            c("/body", json!({"rule": "max_length", "max": 3})),
            json!({"body": 1234}),
            Some("text or a list"),
        ),
        (
            c("/a~1b", json!({"rule": "equals", "value": 1})),
            json!({"a/b": 1}),
            None,
        ),
        (
            c("/amount", json!({"rule": "at_most", "value": 500})),
            json!({"amount": 400, "extra": "ignored"}),
            None,
        ),
    ];
    for (i, (constraint, args, expected)) in cases.iter().enumerate() {
        constraint.validate().unwrap();
        let got = constraint.check(args);
        match (expected, &got) {
            (None, Ok(())) => {}
            (Some(words), Err(msg)) if msg.contains(words) => {}
            _ => {
                panic!("case {i}: {constraint:?} on {args}: expected {expected:?}, got {got:?}")
            }
        }
    }
}

/// Each row: the rule, the value of `/amount_cents`, and `None` (allowed) or the exact
/// denial.
#[test]
fn numeric_bounds() {
    let range = |min: Value, max: Value| {
        let mut rule = json!({"rule": "range"});
        if !min.is_null() {
            rule["min"] = min;
        }
        if !max.is_null() {
            rule["max"] = max;
        }
        rule
    };
    let cases: Vec<(Value, Value, Option<&str>)> = vec![
        (
            range(json!(0), json!(500000)),
            json!(-5000000),
            Some("amount_cents -5000000 is below the grant's minimum 0"),
        ),
        (range(json!(0), json!(500000)), json!(0), None),
        (range(json!(0), json!(500000)), json!(500000), None),
        (
            range(json!(0), json!(500000)),
            json!(500001),
            Some("amount_cents 500001 is above the grant's maximum 500000"),
        ),
        (
            range(json!(1), json!(500000)),
            json!(0),
            Some("amount_cents 0 is below the grant's minimum 1"),
        ),
        (range(json!(1), json!(500000)), json!(1), None),
        (
            range(json!(0), Value::Null),
            json!(-0.000001),
            Some("amount_cents -0.000001 is below the grant's minimum 0"),
        ),
        (
            range(json!(0), Value::Null),
            json!(-1e300),
            Some("amount_cents -1e+300 is below the grant's minimum 0"),
        ),
        (range(json!(0), Value::Null), json!(1e300), None),
        (
            range(json!(0.01), Value::Null),
            json!(0.009),
            Some("amount_cents 0.009 is below the grant's minimum 0.01"),
        ),
        (
            range(json!(0), json!(500000)),
            json!(i64::MIN),
            Some("amount_cents -9223372036854775808 is below the grant's minimum 0"),
        ),
        (
            range(json!(0), json!(500000)),
            json!(u64::MAX),
            Some("amount_cents 18446744073709551615 is above the grant's maximum 500000"),
        ),
        (range(json!(-10), json!(-1)), json!(-5), None),
        (
            range(json!(-10), json!(-1)),
            json!(0),
            Some("amount_cents 0 is above the grant's maximum -1"),
        ),
        (range(json!(5), json!(5)), json!(5.0), None),
        // An upper bound alone lets a negative number through: that is what `min` is for.
        (range(Value::Null, json!(500000)), json!(-5000000), None),
        (
            json!({"rule": "at_most", "value": 500000}),
            json!(-5000000),
            None,
        ),
        (
            json!({"rule": "at_most", "value": 500}),
            json!(501),
            Some("amount_cents 501 is above the grant's maximum 500"),
        ),
        (
            json!({"rule": "at_least", "value": 0}),
            json!(-5000000),
            Some("amount_cents -5000000 is below the grant's minimum 0"),
        ),
        (
            range(json!(0), json!(5)),
            json!("3"),
            Some("/amount_cents must be a number, but it is text"),
        ),
        (
            range(json!(0), json!(5)),
            Value::Null,
            Some("/amount_cents must be a number, but it is null"),
        ),
        (
            range(json!(0), json!(5)),
            json!([1]),
            Some("/amount_cents must be a number, but it is a list"),
        ),
    ];
    for (i, (rule, amount, expected)) in cases.into_iter().enumerate() {
        let constraint = c("/amount_cents", rule);
        constraint.validate().unwrap();
        let got = constraint.check(&json!({"amount_cents": amount}));
        assert_eq!(
            got,
            expected.map_or(Ok(()), |e| Err(e.to_owned())),
            "case {i}: {constraint:?} on {amount}"
        );
    }
    let nested = c("/payment/amount", range(json!(1), Value::Null));
    assert_eq!(
        nested.check(&json!({"payment": {"amount": 0}})),
        Err("payment/amount 0 is below the grant's minimum 1".to_owned())
    );
}

/// Each row: the constraint as written, and the words of its refusal.
#[test]
fn bounds_are_validated_when_the_grant_is_created() {
    let cases = [
        (
            json!({"pointer": "/a", "rule": "range"}),
            "constraint at /a: range needs \"min\", \"max\" or both",
        ),
        (
            json!({"pointer": "/a", "rule": "range", "min": 10, "max": 1}),
            "constraint at /a: the minimum 10 is greater than the maximum 1, so nothing would be allowed",
        ),
        (
            json!({"pointer": "/a", "rule": "range", "min": 0.5, "max": 0.25}),
            "the minimum 0.5 is greater than the maximum 0.25",
        ),
    ];
    for (written, words) in cases {
        let constraint: Constraint = serde_json::from_value(written.clone()).unwrap();
        let err = constraint.validate().unwrap_err().to_string();
        assert!(err.contains(words), "{written}: {err}");
    }
    // Refused as they are read: a bound as text, an unknown field, `value` on a range.
    for written in [
        json!({"pointer": "/a", "rule": "range", "min": "0"}),
        json!({"pointer": "/a", "rule": "range", "min": 0, "maximum": 5}),
        json!({"pointer": "/a", "rule": "range", "value": 5}),
    ] {
        let err = serde_json::from_value::<Constraint>(written.clone()).unwrap_err();
        assert!(
            err.to_string().contains("constraint at /a"),
            "{written}: {err}"
        );
    }
    let equal = c("/a", json!({"rule": "range", "min": 5, "max": 5.0}));
    assert!(equal.validate().is_ok());
}

/// Stored grants keep their meaning: the old rules read and write as before, and `range`
/// writes only the bounds it has.
#[test]
fn the_serialized_forms_are_stable() {
    for written in [
        json!({"pointer": "/a", "rule": "at_most", "value": 500}),
        json!({"pointer": "/a", "rule": "at_least", "value": 0}),
        json!({"pointer": "/a", "rule": "range", "min": 0, "max": 500}),
        json!({"pointer": "/a", "rule": "range", "max": 500}),
        json!({"pointer": "/a", "rule": "range", "min": 1}),
        json!({"pointer": "/to", "rule": "email_domain_in", "domains": ["example.com"]}),
    ] {
        let constraint: Constraint = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(&constraint).unwrap(), written);
    }
    assert_eq!(
        c("/a", json!({"rule": "range", "min": 1})).rule,
        Rule::Range {
            min: Some(1.into()),
            max: None
        }
    );
}

/// Each row: an address, and `None` (accepted) or the end of the refusal, which always
/// begins `/to is "<address>", `.
#[test]
fn email_addresses_are_read_strictly() {
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_label = format!("bob@{}.com", "a".repeat(64));
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("bob@example.com", None),
        ("Bob.Smith@EXAMPLE.com", None),
        ("first.last+tag@example.com", None),
        ("o'brien@example.com", None),
        ("a_b-c=d@example.com", None),
        ("1234@example.com", None),
        ("#$&'*+-/=?^_`{|}~@example.com", None),
        (
            "a%evil.com@example.com",
            Some("whose local part contains '%', which some mail servers route to another domain"),
        ),
        (
            "evil.com!bob@example.com",
            Some(
                "whose local part contains '!', which some mail servers route to another host (a bang path)",
            ),
        ),
        (
            "\"bob\"@example.com",
            Some("whose local part is quoted; only an unquoted local part is accepted"),
        ),
        (
            "\"bob@evil.io\"@example.com",
            Some("which has more than one '@'; only a plain address local@domain is accepted"),
        ),
        (
            "bob(comment)@example.com",
            Some("which contains a comment in parentheses; comments are not accepted"),
        ),
        (
            "bob@example.com(evil.io)",
            Some("which contains a comment in parentheses; comments are not accepted"),
        ),
        (
            "bob@example.com@evil.io",
            Some("which has more than one '@'; only a plain address local@domain is accepted"),
        ),
        ("bob@@example.com", Some("which has more than one '@'")),
        (
            "bob",
            Some("which is not an e-mail address (it has no '@')"),
        ),
        (
            "example.com",
            Some("which is not an e-mail address (it has no '@')"),
        ),
        (
            "@example.com",
            Some("whose local part (before the '@') is empty"),
        ),
        (
            ".bob@example.com",
            Some("whose local part begins or ends with a dot or has two dots in a row"),
        ),
        (
            "bob.@example.com",
            Some("whose local part begins or ends with a dot or has two dots in a row"),
        ),
        (
            "bo..b@example.com",
            Some("whose local part begins or ends with a dot or has two dots in a row"),
        ),
        (
            "bob@.example.com",
            Some("whose domain has an empty label (a leading, trailing or doubled dot)"),
        ),
        (
            "bob@example.com.",
            Some("whose domain has an empty label (a leading, trailing or doubled dot)"),
        ),
        (
            "bob@example..com",
            Some("whose domain has an empty label (a leading, trailing or doubled dot)"),
        ),
        ("bob@", Some("whose domain is empty")),
        (
            "bob @example.com",
            Some(
                "which contains whitespace or control characters; only a plain address local@domain is accepted",
            ),
        ),
        (
            "bob@example.com\n",
            Some("which contains whitespace or control characters"),
        ),
        (
            "bob\t@example.com",
            Some("which contains whitespace or control characters"),
        ),
        (
            "Bob <bob@example.com>",
            Some("which contains whitespace or control characters"),
        ),
        (
            "<bob@example.com>",
            Some("whose local part contains '<', which a plain address does not have"),
        ),
        (
            "bob\\@example.com",
            Some("whose local part contains '\\\\', which a plain address does not have"),
        ),
        (
            "bob,alice@example.com",
            Some("whose local part contains ',', which a plain address does not have"),
        ),
        (
            "bob;x@example.com",
            Some("whose local part contains ';', which a plain address does not have"),
        ),
        (
            "bob@[93.184.216.34]",
            Some("whose domain is an IP address literal; only domain names are accepted"),
        ),
        (
            "bob@[IPv6:2001:db8::1]",
            Some("whose domain is an IP address literal; only domain names are accepted"),
        ),
        (
            "bob@93.184.216.34",
            Some("whose domain is an IP address; only domain names are accepted"),
        ),
        (
            "bob@exаmple.com",
            Some(
                "which contains non-ASCII characters (a look-alike of an allowed domain is refused)",
            ),
        ),
        (
            "bøb@example.com",
            Some(
                "which contains non-ASCII characters (a look-alike of an allowed domain is refused)",
            ),
        ),
        (
            "bob@exa_mple.com",
            Some("whose domain contains '_'; a domain name has letters, digits, '-' and dots"),
        ),
        (
            "bob@example.com:25",
            Some("whose domain contains ':'; a domain name has letters, digits, '-' and dots"),
        ),
        (
            "bob@-example.com",
            Some("whose domain has a label that begins or ends with '-'"),
        ),
        (
            &long_local,
            Some("whose local part is longer than 64 characters"),
        ),
        (
            &long_label,
            Some("whose domain has a label longer than 63 characters"),
        ),
        (
            "bob@evil.io",
            Some(
                "whose domain evil.io is not among the allowed domains example.com, *.example.org",
            ),
        ),
        (
            "bob@example.com.evil.io",
            Some("whose domain example.com.evil.io is not among the allowed domains"),
        ),
        (
            "bob@example.org",
            Some("whose domain example.org is not among the allowed domains"),
        ),
        ("bob@mail.example.org", None),
    ];
    assert!(cases.len() >= 25);
    let constraint = c(
        "/to",
        json!({"rule": "email_domain_in", "domains": ["example.com", "*.example.org"]}),
    );
    constraint.validate().unwrap();
    for (address, expected) in cases {
        let got = constraint.check(&json!({"to": address}));
        match (expected, &got) {
            (None, Ok(())) => {}
            (Some(words), Err(msg)) => {
                let start = format!("/to is {}, ", show(&json!(address)));
                assert!(
                    msg.starts_with(&start) && msg.contains(words),
                    "{address:?}: expected {words:?}, got {msg:?}"
                );
            }
            _ => panic!("{address:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn domain_patterns_are_domain_names() {
    for (pattern, words) in [
        ("Example.com", Some("not a lower-case ASCII domain")),
        ("exаmple.com", Some("not a lower-case ASCII domain")),
        (
            "10.0.0.1",
            Some("\"10.0.0.1\" is not a domain: it is an IP address"),
        ),
        ("*.10.0.0.1", Some("is an IP address")),
        ("[10.0.0.1]", Some("is an IP address literal")),
        ("example..com", Some("has an empty label")),
        ("*.", Some("is empty")),
        ("example.com", None),
        ("*.example.com", None),
        ("xn--bcher-kva.example", None),
    ] {
        let got = validate_domain_pattern(pattern);
        match (words, &got) {
            (None, Ok(())) => {}
            (Some(w), Err(e)) if e.contains(w) => {}
            _ => panic!("{pattern}: expected {words:?}, got {got:?}"),
        }
    }
}

#[test]
fn invalid_constraints_are_refused_at_creation() {
    for bad in [
        c("amount", json!({"rule": "at_most", "value": 1})),
        c("/a~2", json!({"rule": "at_most", "value": 1})),
        c("/to", json!({"rule": "email_domain_in", "domains": []})),
        c(
            "/to",
            json!({"rule": "email_domain_in", "domains": ["exаmple.com"]}),
        ),
        c(
            "/to",
            json!({"rule": "email_domain_in", "domains": ["Example.com"]}),
        ),
        c("/x", json!({"rule": "one_of", "values": []})),
        c("/x", json!({"rule": "glob", "pattern": ""})),
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let unknown: Result<Constraint, _> =
        serde_json::from_value(json!({"pointer": "/a", "rule": "at_most", "value": 1, "typo": 2}));
    assert!(unknown.is_err());
}

#[test]
fn globs() {
    for (p, v, m) in [
        ("github.*", "github.create_issue", true),
        ("a*b", "ab", true),
        ("a*b", "a/b", false),
        ("a**b", "a/x/b", true),
        ("?", "é", true),
        ("?", "", false),
        ("*", "", true),
        ("x", "xx", false),
    ] {
        assert_eq!(glob_match(p, v), m, "{p} {v}");
    }
    assert!(!glob_match("**", &"a".repeat(MAX_MATCH_LEN + 1)));
}

proptest! {
    /// A value matches a pattern made of itself with every character replaced by `?` or
    /// kept, and the literal pattern matches only itself.
    #[test]
    fn literal_patterns_match_only_themselves(a in "[a-z/.]{0,20}", b in "[a-z/.]{0,20}") {
        prop_assert_eq!(glob_match(&a, &b), a == b);
    }

    #[test]
    fn double_star_matches_everything(v in "\\PC{0,50}") {
        prop_assert!(glob_match("**", &v));
    }

    #[test]
    fn at_most_agrees_with_exact_arithmetic(x in -1_000_000_000i64..1_000_000_000, bound in -1_000_000_000i64..1_000_000_000) {
        let v = serde_json::Number::from_f64(x as f64 / 1000.0).unwrap();
        let b = serde_json::Number::from_f64(bound as f64 / 1000.0).unwrap();
        let constraint = Constraint { pointer: "/v".into(), rule: Rule::AtMost { value: b } };
        prop_assert_eq!(constraint.check(&json!({"v": v})).is_ok(), x <= bound);
    }

    /// A range allows exactly the numbers within both bounds, and a denial names the bound
    /// that failed.
    #[test]
    fn range_agrees_with_exact_arithmetic(x in -1_000_000_000i64..1_000_000_000, a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000) {
        let (lo, hi) = (a.min(b), a.max(b));
        let n = |i: i64| serde_json::Number::from_f64(i as f64 / 1000.0).unwrap();
        let constraint = Constraint { pointer: "/v".into(), rule: Rule::Range { min: Some(n(lo)), max: Some(n(hi)) } };
        prop_assert!(constraint.validate().is_ok());
        match constraint.check(&json!({"v": n(x)})) {
            Ok(()) => prop_assert!(lo <= x && x <= hi),
            Err(e) if x < lo => prop_assert!(e.contains("below the grant's minimum"), "{}", e),
            Err(e) => prop_assert!(x > hi && e.contains("above the grant's maximum"), "{}", e),
        }
    }
}
