//! RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! The canonical form is what Writ hashes and signs: object members sorted by their UTF-16 code
//! units, no insignificant whitespace, strings with the minimal escaping of ECMAScript's
//! `JSON.stringify`, and numbers in ECMAScript's `Number.prototype.toString` form.
//!
//! Writ is stricter than a lenient parser on input, because an audit log must never silently
//! change what it was given: a duplicate object key, or an integer that an IEEE 754 double cannot
//! hold exactly (I-JSON, RFC 7493), is an error rather than a quiet rewrite.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a JSON text or value has no canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    /// The text is not JSON, or breaks one of the strict-input rules (e.g. a duplicate key).
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// An integer outside the range an IEEE 754 double represents exactly.
    #[error(
        "the number {0} cannot be represented exactly as an IEEE 754 double (RFC 7493 I-JSON); send it as a string"
    )]
    InexactInteger(String),
    /// NaN or an infinity (cannot occur in parsed JSON, only in constructed values).
    #[error("non-finite numbers (NaN, Infinity) are not JSON")]
    NonFinite,
}

/// Parses JSON text strictly: duplicate object keys and integers that would lose precision as a
/// double are errors.
pub fn parse_strict(text: &str) -> Result<Value, CanonicalError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let StrictValue(value) =
        StrictValue::deserialize(&mut de).map_err(|e| CanonicalError::Syntax(e.to_string()))?;
    de.end()
        .map_err(|e| CanonicalError::Syntax(e.to_string()))?;
    check_numbers(&value)?;
    Ok(value)
}

/// Parses `text` strictly and returns its canonical form.
pub fn canonicalize_str(text: &str) -> Result<String, CanonicalError> {
    canonicalize(&parse_strict(text)?)
}

/// Returns the RFC 8785 canonical form of `value`.
pub fn canonicalize(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(128);
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(members) => write_object(out, members)?,
    }
    Ok(())
}

fn write_object(out: &mut String, members: &Map<String, Value>) -> Result<(), CanonicalError> {
    let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
    // RFC 8785 §3.2.3: sort by the UTF-16 code units of the (unescaped) names.
    sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, name);
        out.push(':');
        write_value(out, value)?;
    }
    out.push('}');
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let v = c as u32;
                out.push_str("\\u00");
                out.push(HEX[(v >> 4) as usize] as char);
                out.push(HEX[(v & 0xf) as usize] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) -> Result<(), CanonicalError> {
    let f = exact_f64(n)?;
    if f == 0.0 {
        // ECMAScript prints both zeros as "0".
        out.push('0');
        return Ok(());
    }
    let mut buffer = ryu_js::Buffer::new();
    out.push_str(buffer.format_finite(f));
    Ok(())
}

/// The number as a double. An integer is accepted only if its canonical form is the integer
/// itself, so that canonicalisation never changes what an integer says: `9007199254740993` (which
/// a double rounds to ...992) is refused, while `1152921504606847000` (exactly a double's
/// shortest form) is kept.
fn exact_f64(n: &Number) -> Result<f64, CanonicalError> {
    let (f, text) = if let Some(u) = n.as_u64() {
        (u as f64, u.to_string())
    } else if let Some(i) = n.as_i64() {
        (i as f64, i.to_string())
    } else {
        return match n.as_f64() {
            Some(f) if f.is_finite() => Ok(f),
            _ => Err(CanonicalError::NonFinite),
        };
    };
    let mut buffer = ryu_js::Buffer::new();
    if buffer.format_finite(f) != text {
        return Err(CanonicalError::InexactInteger(text));
    }
    Ok(f)
}

fn check_numbers(value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Number(n) => exact_f64(n).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(members) => members.values().try_for_each(check_numbers),
        _ => Ok(()),
    }
}

/// Checks that `text` is exactly the canonical form of the JSON value it encodes, without
/// building the value: one pass, no allocation except for keys with escapes.
///
/// Equivalent to `canonicalize_str(text) == Ok(text)` (a property test holds it to that), and
/// several times faster, which is what lets `writ audit verify` check every stored entry.
pub fn check_canonical(text: &str) -> Result<(), CanonicalError> {
    let mut checker = Checker {
        b: text.as_bytes(),
        text,
        i: 0,
        depth: 0,
    };
    checker.value()?;
    if checker.i != checker.b.len() {
        return Err(checker.fail("trailing characters"));
    }
    Ok(())
}

/// serde_json's nesting limit, so that both paths accept the same documents.
const MAX_DEPTH: u32 = 128;

struct Checker<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    depth: u32,
}

impl<'a> Checker<'a> {
    fn fail(&self, what: &str) -> CanonicalError {
        CanonicalError::Syntax(format!("not canonical at byte {}: {what}", self.i))
    }

    fn peek(&self) -> Result<u8, CanonicalError> {
        self.b
            .get(self.i)
            .copied()
            .ok_or_else(|| self.fail("unexpected end"))
    }

    fn expect(&mut self, c: u8) -> Result<(), CanonicalError> {
        if self.peek()? != c {
            return Err(self.fail(&format!("expected {:?}", c as char)));
        }
        self.i += 1;
        Ok(())
    }

    fn value(&mut self) -> Result<(), CanonicalError> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.fail("expected a value")),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), CanonicalError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.fail("bad literal"))
        }
    }

    fn enter(&mut self) -> Result<(), CanonicalError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.fail("nested too deeply"));
        }
        self.i += 1;
        Ok(())
    }

    fn object(&mut self) -> Result<(), CanonicalError> {
        self.enter()?;
        if self.peek()? == b'}' {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        let mut previous: Option<std::borrow::Cow<'a, str>> = None;
        loop {
            let key = self.string()?;
            if let Some(prev) = &previous
                && prev.encode_utf16().cmp(key.encode_utf16()) != std::cmp::Ordering::Less
            {
                return Err(self.fail("object members out of order or duplicated"));
            }
            previous = Some(key);
            self.expect(b':')?;
            self.value()?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.fail("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self) -> Result<(), CanonicalError> {
        self.enter()?;
        if self.peek()? == b']' {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.value()?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.fail("expected ',' or ']'")),
            }
        }
    }

    /// A string in canonical form; returns its decoded content (borrowed when unescaped).
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, CanonicalError> {
        self.expect(b'"')?;
        let mut start = self.i;
        let mut owned: Option<String> = None;
        loop {
            match self.peek()? {
                b'"' => {
                    let raw = &self.text[start..self.i];
                    self.i += 1;
                    return Ok(match owned {
                        Some(mut s) => {
                            s.push_str(raw);
                            std::borrow::Cow::Owned(s)
                        }
                        None => std::borrow::Cow::Borrowed(raw),
                    });
                }
                0x00..=0x1f => return Err(self.fail("raw control character in string")),
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[start..self.i]);
                    s.push(self.escape()?);
                    start = self.i;
                }
                _ => self.i += 1,
            }
        }
    }

    /// One escape sequence, which must be the one the canonical form uses.
    fn escape(&mut self) -> Result<char, CanonicalError> {
        let esc = self
            .b
            .get(self.i + 1)
            .copied()
            .ok_or_else(|| self.fail("unexpected end"))?;
        let ch = match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'b' => '\u{08}',
            b'f' => '\u{0c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                // Canonical form escapes only control characters without a short form, as
                // \u00xx with lowercase hex.
                let v = match self.b.get(self.i + 2..self.i + 6) {
                    Some([b'0', b'0', h @ b'0'..=b'1', l @ (b'0'..=b'9' | b'a'..=b'f')]) => {
                        ((h - b'0') << 4)
                            | if l.is_ascii_digit() {
                                l - b'0'
                            } else {
                                l - b'a' + 10
                            }
                    }
                    _ => return Err(self.fail("non-canonical \\u escape")),
                };
                if matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                    return Err(self.fail("non-canonical \\u escape"));
                }
                self.i += 4;
                v as char
            }
            _ => return Err(self.fail("non-canonical escape")),
        };
        self.i += 2;
        Ok(ch)
    }

    fn number(&mut self) -> Result<(), CanonicalError> {
        let start = self.i;
        while let Some(c) = self.b.get(self.i)
            && matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        {
            self.i += 1;
        }
        let token = &self.text[start..self.i];
        // Rust's float parsing is correctly rounded, like serde_json's `float_roundtrip`.
        let f: f64 = token.parse().map_err(|_| self.fail("bad number"))?;
        if !f.is_finite() {
            return Err(self.fail("number out of range"));
        }
        let mut buffer = ryu_js::Buffer::new();
        let canonical = if f == 0.0 {
            "0"
        } else {
            buffer.format_finite(f)
        };
        if canonical != token {
            return Err(self.fail(&format!("number {token} is canonically {canonical}")));
        }
        Ok(())
    }
}

/// A `serde_json::Value` whose deserialisation refuses duplicate object keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate object key {key:?}"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(StrictValue(Value::Object(members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8785 §3.2.2: the example with numbers, escapes and literals.
    #[test]
    fn rfc8785_section_3_2_2_example() {
        let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        assert_eq!(canonicalize_str(input).unwrap(), expected);
    }

    /// RFC 8785 §3.2.3: property sorting by UTF-16 code units.
    #[test]
    fn rfc8785_section_3_2_3_sorting() {
        let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canonicalize_str(input).unwrap(), expected);
    }

    /// RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical serialisation.
    #[test]
    fn rfc8785_appendix_b_numbers() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for &(bits, expected) in cases {
            let f = f64::from_bits(bits);
            let value = Value::Number(Number::from_f64(f).unwrap());
            assert_eq!(canonicalize(&value).unwrap(), expected, "bits {bits:#018x}");
            // The canonical text parses back to the same double.
            let reparsed: f64 = expected.parse().unwrap();
            assert_eq!(reparsed.to_bits() & !(1 << 63), bits & !(1 << 63));
        }
        // NaN and the infinities (0x7fffffffffffffff, 0x7ff0000000000000) have no JSON form.
        assert!(Number::from_f64(f64::from_bits(0x7fffffffffffffff)).is_none());
        assert!(Number::from_f64(f64::from_bits(0x7ff0000000000000)).is_none());
    }

    #[test]
    fn checker_cases() {
        let cases: &[(&str, bool)] = &[
            (r#"{"a":1,"b":[true,false,null,"x"]}"#, true),
            (r#"{"b":1,"a":2}"#, false),
            (r#"{"a":1,"a":1}"#, false),
            (r#"{"a": 1}"#, false),
            ("1.0", false),
            ("-0", false),
            ("0", true),
            ("1e+30", true),
            ("1E+30", false),
            ("1e30", false),
            (r#""\u000f""#, true),
            (r#""\u000F""#, false),
            (r#""\u0041""#, false),
            (r#""\n""#, true),
            (r#""\u000a""#, false),
            (r#""\/""#, false),
            ("\"\u{1}\"", false),
            (r#""€""#, true),
            (r#"{"\r":1,"1":2}"#, true),
            (r#"{"\u00e9":1}"#, false),
            ("9007199254740993", false),
            ("[]", true),
            ("{}", true),
            ("[1,]", false),
            ("", false),
            ("[1] ", false),
        ];
        for (text, canonical) in cases {
            assert_eq!(check_canonical(text).is_ok(), *canonical, "{text}");
            assert_eq!(
                canonicalize_str(text).map(|c| &c == text).unwrap_or(false),
                *canonical,
                "{text}"
            );
        }
    }

    #[test]
    fn strict_input_rules() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (r#"{"a":1,"a":2}"#, Err("duplicate object key \"a\"")),
            (r#"{"x":{"b":1,"b":1}}"#, Err("duplicate object key \"b\"")),
            ("9007199254740993", Err("cannot be represented exactly")),
            ("-9007199254740993", Err("cannot be represented exactly")),
            ("18446744073709551615", Err("cannot be represented exactly")),
            ("9007199254740992", Ok("9007199254740992")),
            ("1152921504606846976", Err("cannot be represented exactly")),
            ("1152921504606847000", Ok("1152921504606847000")),
            ("1152921504606846976.0", Ok("1152921504606847000")),
            ("-0", Ok("0")),
            ("[1.0, -0.0, 1e2, 10E-1]", Ok("[1,0,100,1]")),
            (r#"{"a":1} x"#, Err("trailing characters")),
            (r#""\ud800""#, Err("invalid JSON")),
            ("", Err("EOF")),
            (
                r#"  { "b" : [ true , null ] , "a" : "\u0001\t" }  "#,
                Ok(r#"{"a":"\u0001\t","b":[true,null]}"#),
            ),
        ];
        for (input, expected) in cases {
            let got = canonicalize_str(input);
            match (expected, got) {
                (Ok(want), Ok(got)) => assert_eq!(&got, want, "input {input:?}"),
                (Err(fragment), Err(err)) => {
                    let msg = err.to_string();
                    assert!(
                        msg.contains(fragment),
                        "input {input:?}: {msg:?} lacks {fragment:?}"
                    );
                }
                (want, got) => panic!("input {input:?}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                (-(1i64 << 53)..(1i64 << 53)).prop_map(|i| Value::Number(i.into())),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| Value::Number(Number::from_f64(f).unwrap())),
                any::<String>().prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::btree_map(any::<String>(), inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Canonicalisation is idempotent and preserves the value.
            #[test]
            fn canonical_form_is_a_fixed_point(value in json_value()) {
                let once = canonicalize(&value).unwrap();
                let reparsed = parse_strict(&once).unwrap();
                let twice = canonicalize(&reparsed).unwrap();
                prop_assert_eq!(&once, &twice);
                // Numbers round-trip to the same double, so the values compare equal as doubles.
                prop_assert_eq!(canonicalize(&value).unwrap(), canonicalize(&reparsed).unwrap());
            }

            /// The fast checker agrees with the canonicaliser on canonical text...
            #[test]
            fn checker_accepts_canonical_text(value in json_value()) {
                let text = canonicalize(&value).unwrap();
                prop_assert!(check_canonical(&text).is_ok(), "{}", text);
            }

            /// ...and on arbitrary text: it accepts exactly the texts that are their own form.
            #[test]
            fn checker_agrees_on_any_text(value in json_value(), pretty in any::<bool>(), cut in any::<prop::sample::Index>()) {
                let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { serde_json::to_string(&value).unwrap() };
                let mut candidates = vec![text.clone()];
                // A truncated variant and one with a character dropped.
                let mut boundary = cut.index(text.len() + 1);
                while !text.is_char_boundary(boundary) { boundary -= 1; }
                candidates.push(text[..boundary].to_owned());
                let mut dropped = text.clone();
                if boundary < dropped.len() { dropped.remove(boundary); }
                candidates.push(dropped);
                for t in candidates {
                    let is_own_form = canonicalize_str(&t).map(|c| c == t).unwrap_or(false);
                    prop_assert_eq!(check_canonical(&t).is_ok(), is_own_form, "{:?}", t);
                }
            }

            /// Re-serialising with arbitrary whitespace and member order does not change the form.
            #[test]
            fn formatting_does_not_matter(value in json_value()) {
                let pretty = serde_json::to_string_pretty(&value).unwrap();
                prop_assert_eq!(canonicalize_str(&pretty).unwrap(), canonicalize(&value).unwrap());
            }
        }
    }
}
