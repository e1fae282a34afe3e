//! Exact decimal amounts for sum budgets: fixed point with six decimal places, so that adding
//! 0.1 ten times is exactly 1 and a budget is never overspent by rounding.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An amount in millionths. In JSON it is an ordinary number (`5000`, `12.5`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub i64);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % SCALE == 0 {
            s.serialize_i64(self.0 / SCALE)
        } else {
            // Six decimals at most: the shortest double that prints back the same decimal.
            let text = self.to_string();
            let f: f64 = text.parse().map_err(serde::ser::Error::custom)?;
            s.serialize_f64(f)
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        Amount::from_json(&n).map_err(serde::de::Error::custom)
    }
}

pub const SCALE_DIGITS: usize = 6;
const SCALE: i64 = 1_000_000;

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses a JSON number exactly, refusing more than six decimal places and values beyond
    /// ±9.2 × 10¹². Returns a description of the problem otherwise.
    pub fn from_json(n: &serde_json::Number) -> Result<Amount, String> {
        Self::parse_decimal(&n.to_string())
    }

    /// Parses a decimal literal like `12`, `-0.5`, `1.25e3`.
    pub fn parse_decimal(text: &str) -> Result<Amount, String> {
        let too_big = || format!("{text} is too large for an amount");
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = text[i + 1..]
                    .parse()
                    .map_err(|_| format!("{text} is not a number"))?;
                (&text[..i], exp)
            }
            None => (text, 0),
        };
        let (negative, digits) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa),
        };
        let (int_part, frac_part) = match digits.split_once('.') {
            Some((i, f)) => (i, f),
            None => (digits, ""),
        };
        if int_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("{text} is not a number"));
        }
        // All digits as one integer, and the power of ten to scale it by to reach millionths.
        let all: String = format!("{int_part}{frac_part}");
        let all = all.trim_start_matches('0');
        let shift = i64::from(exponent) - frac_part.len() as i64 + SCALE_DIGITS as i64;
        let mut value: i128 = 0;
        for b in all.bytes() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(b - b'0')))
                .filter(|v| *v <= i128::from(i64::MAX))
                .ok_or_else(too_big)?;
        }
        if shift >= 0 {
            for _ in 0..shift {
                if value == 0 {
                    break;
                }
                value = value
                    .checked_mul(10)
                    .filter(|v| *v <= i128::from(i64::MAX))
                    .ok_or_else(too_big)?;
            }
        } else {
            for _ in 0..(-shift) {
                if value == 0 {
                    break;
                }
                if value % 10 != 0 {
                    return Err(format!(
                        "{text} has more than {SCALE_DIGITS} decimal places"
                    ));
                }
                value /= 10;
            }
        }
        let value = i64::try_from(value).map_err(|_| too_big())?;
        Ok(Amount(if negative { -value } else { value }))
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let int = abs / SCALE as u64;
        let frac = abs % SCALE as u64;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exactly() {
        let cases = [
            ("0", 0),
            ("12", 12_000_000),
            ("-0.5", -500_000),
            ("0.1", 100_000),
            ("1.25e3", 1_250_000_000),
            ("1e-6", 1),
            ("5000.000001", 5_000_000_001),
            ("000.100", 100_000),
        ];
        for (text, micros) in cases {
            assert_eq!(Amount::parse_decimal(text), Ok(Amount(micros)), "{text}");
        }
        for bad in [
            "",
            "1.0000001",
            "1e-7",
            "abc",
            "1e400",
            "99999999999999999999",
            "1..2",
            "-",
            ".5",
            "1e99999999999",
            "1e-2147483648",
        ] {
            assert!(Amount::parse_decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(Amount(5_000_000_000).to_string(), "5000");
        assert_eq!(Amount(-1_500_000).to_string(), "-1.5");
        assert_eq!(Amount(1).to_string(), "0.000001");
    }

    #[test]
    fn json_form_is_a_plain_number() {
        assert_eq!(
            serde_json::to_string(&Amount(5_000_000_000)).unwrap(),
            "5000"
        );
        assert_eq!(serde_json::to_string(&Amount(12_500_000)).unwrap(), "12.5");
        assert_eq!(
            serde_json::from_str::<Amount>("0.1").unwrap(),
            Amount(100_000)
        );
        assert!(serde_json::from_str::<Amount>("0.0000001").is_err());
        assert!(serde_json::from_str::<Amount>("\"5\"").is_err());
    }

    proptest! {
        #[test]
        fn display_round_trips(micros in any::<i64>().prop_filter("not MIN", |m| *m != i64::MIN)) {
            let a = Amount(micros);
            prop_assert_eq!(Amount::parse_decimal(&a.to_string()), Ok(a));
        }
    }
}
