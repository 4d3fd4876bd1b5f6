//! Exact numbers (SPEC §4 addition of §14): configured values read as
//! decimals, figures of the fold kept as rationals, and every decision
//! (tier, rank order, histogram bucket, rule comparison) taken on those.
//!
//! A figure is a `Ratio` of an `i128` numerator and a `u128` denominator.
//! Comparing two of them never overflows: when the cross products do not fit
//! in 128 bits the comparison runs Euclid's algorithm on the two fractions
//! (integer parts, then the reciprocals of the remainders), which only
//! divides. So every comparison of `Ratio`s is exact for all values and
//! allocates nothing. Only a health score whose numerator or denominator
//! does not fit in 128 bits (hostile inputs: seats, event and csat counts
//! whose product exceeds about 2¹¹⁰) is kept as a `BigRatio` on the heap.
//!
//! Floating point stays for the reported figures: a `Number` carries the
//! value as it is shown (computed as before) beside its exact value.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use num_bigint::{BigInt, BigUint, Sign};

/// `num / den` exactly, `den > 0`. Equality and order are those of the
/// rational value (`1/2 == 2/4`).
#[derive(Clone, Copy, Debug)]
pub struct Ratio {
    num: i128,
    den: u128,
}

impl Default for Ratio {
    fn default() -> Self {
        Ratio::ZERO
    }
}

impl Ratio {
    pub const ZERO: Ratio = Ratio { num: 0, den: 1 };

    /// `num / den`; `den` must be > 0.
    pub const fn new(num: i128, den: u128) -> Ratio {
        assert!(den > 0, "a ratio needs a positive denominator");
        Ratio { num, den }
    }

    pub const fn int(v: i128) -> Ratio {
        Ratio { num: v, den: 1 }
    }

    /// `num / den` of signed 64-bit figures (counts, cents), `den > 0`.
    pub fn of(num: i64, den: i64) -> Ratio {
        debug_assert!(den > 0);
        Ratio { num: num as i128, den: den as u128 }
    }

    pub fn num(&self) -> i128 {
        self.num
    }

    pub fn den(&self) -> u128 {
        self.den
    }

    /// The value's floor.
    pub fn floor(&self) -> i128 {
        if self.num >= 0 {
            (self.num as u128 / self.den) as i128
        } else {
            let q = self.num.unsigned_abs().div_ceil(self.den);
            // |num| < 2¹²⁷ + 1 and den >= 1, so q <= 2¹²⁷.
            0i128.wrapping_sub_unsigned(q)
        }
    }

    pub fn to_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }

    fn big(&self) -> BigRatio {
        BigRatio { num: BigInt::from(self.num), den: BigUint::from(self.den) }
    }
}

/// Compares `a/b` with `c/d` (all non-negative, `b, d > 0`) exactly.
fn cmp_unsigned(mut a: u128, mut b: u128, mut c: u128, mut d: u128) -> Ordering {
    loop {
        if let (Some(ad), Some(cb)) = (a.checked_mul(d), c.checked_mul(b)) {
            return ad.cmp(&cb);
        }
        let (qa, qc) = (a / b, c / d);
        if qa != qc {
            return qa.cmp(&qc);
        }
        let (ra, rc) = (a % b, c % d);
        match (ra == 0, rc == 0) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            // ra/b vs rc/d is d/rc vs b/ra (both sides inverted).
            (false, false) => (a, b, c, d) = (d, rc, b, ra),
        }
    }
}

impl Ord for Ratio {
    fn cmp(&self, o: &Ratio) -> Ordering {
        if self.den == o.den {
            // Integers, cents, and any two of one denominator: no division.
            return self.num.cmp(&o.num);
        }
        match (self.num < 0, o.num < 0) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => cmp_unsigned(self.num as u128, self.den, o.num as u128, o.den),
            (true, true) => cmp_unsigned(o.num.unsigned_abs(), o.den, self.num.unsigned_abs(), self.den),
        }
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, o: &Ratio) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Ratio {
    fn eq(&self, o: &Ratio) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Ratio {}

/// A rational too wide for `Ratio` (`den > 0`).
#[derive(Clone, Debug)]
pub struct BigRatio {
    pub num: BigInt,
    pub den: BigUint,
}

impl BigRatio {
    fn cmp(&self, o: &BigRatio) -> Ordering {
        (&self.num * BigInt::from(o.den.clone())).cmp(&(&o.num * BigInt::from(self.den.clone())))
    }

    fn floor(&self) -> BigInt {
        let den = BigInt::from(self.den.clone());
        let (q, r) = (&self.num / &den, &self.num % &den);
        if r.sign() == Sign::Minus { q - 1 } else { q }
    }

    fn to_f64(&self) -> f64 {
        use num_traits::ToPrimitive;
        // Scaled so that both parts fit in an f64 whatever their size.
        let shift = self.den.bits().saturating_sub(60);
        let den = (&self.den >> shift).to_f64().unwrap_or(f64::MAX);
        let num = (&self.num >> shift).to_f64().unwrap_or(f64::MAX);
        num / den
    }
}

/// An exact value: a `Ratio`, or (rarely) a `BigRatio`.
#[derive(Clone, Debug)]
pub enum Exact {
    Small(Ratio),
    Big(Arc<BigRatio>),
}

impl Default for Exact {
    fn default() -> Self {
        Exact::Small(Ratio::ZERO)
    }
}

impl Exact {
    /// `num / den` when it fits a `Ratio`, else on the heap.
    pub fn of_big(num: BigInt, den: BigUint) -> Exact {
        use num_traits::ToPrimitive;
        match (num.to_i128(), den.to_u128()) {
            (Some(n), Some(d)) => Exact::Small(Ratio::new(n, d)),
            _ => Exact::Big(Arc::new(BigRatio { num, den })),
        }
    }

    /// Compares with a `Ratio` without allocating (unless `self` is big).
    pub fn cmp_ratio(&self, r: &Ratio) -> Ordering {
        match self {
            Exact::Small(a) => a.cmp(r),
            Exact::Big(b) => b.cmp(&r.big()),
        }
    }

    /// `self × scale` rounded half away from zero (saturating at `i64`'s range).
    pub fn round_scaled(&self, scale: u64) -> i64 {
        use num_traits::ToPrimitive;
        if let Exact::Small(r) = self
            && let Some(scaled) = r.num.unsigned_abs().checked_mul(scale as u128)
        {
            let (q, rem) = (scaled / r.den, scaled % r.den);
            let q = if rem >= r.den - rem { q + 1 } else { q };
            let q = i64::try_from(q).unwrap_or(i64::MAX);
            return if r.num < 0 { -q } else { q };
        }
        let b = match self {
            Exact::Small(r) => r.big(),
            Exact::Big(b) => (**b).clone(),
        };
        let den = BigInt::from(b.den);
        let twice = (b.num.magnitude() * scale * 2u32 + den.magnitude()) / (den.magnitude() * 2u32);
        let q = twice.to_i64().unwrap_or(i64::MAX);
        if b.num.sign() == Sign::Minus { -q } else { q }
    }

    pub fn floor_i64(&self) -> i64 {
        match self {
            Exact::Small(r) => r.floor().clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            Exact::Big(b) => {
                use num_traits::ToPrimitive;
                let f = b.floor();
                f.to_i64().unwrap_or(if f.sign() == Sign::Minus { i64::MIN } else { i64::MAX })
            }
        }
    }

    pub fn to_f64(&self) -> f64 {
        match self {
            Exact::Small(r) => r.to_f64(),
            Exact::Big(b) => b.to_f64(),
        }
    }

    /// The value as a `BigRatio` (for arithmetic no `Ratio` can hold).
    pub fn to_big(&self) -> BigRatio {
        match self {
            Exact::Small(r) => r.big(),
            Exact::Big(b) => (**b).clone(),
        }
    }
}

impl From<Ratio> for Exact {
    fn from(r: Ratio) -> Exact {
        Exact::Small(r)
    }
}

impl Ord for Exact {
    fn cmp(&self, o: &Exact) -> Ordering {
        match (self, o) {
            (Exact::Small(a), Exact::Small(b)) => a.cmp(b),
            (Exact::Big(a), Exact::Big(b)) => a.cmp(b),
            (Exact::Small(a), Exact::Big(b)) => a.big().cmp(b),
            (Exact::Big(a), Exact::Small(b)) => a.cmp(&b.big()),
        }
    }
}

impl PartialOrd for Exact {
    fn partial_cmp(&self, o: &Exact) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Exact {
    fn eq(&self, o: &Exact) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Exact {}

/// A configured number read as the decimal it was written as: `units / 10^scale`.
///
/// A TOML or JSON float arrives as the nearest `f64`; its shortest
/// round-trip representation (what Rust prints, "0.15" for 0.15) is the
/// decimal that was written whenever that had at most 15 significant digits,
/// so the decimal is recovered from it.
#[derive(Clone, Copy, Debug)]
pub struct Decimal {
    /// The value as an `f64` (as configured; used for reported figures).
    pub value: f64,
    pub units: i128,
    pub scale: u32,
}

/// Decimals have at most this many places and are below 10^this in magnitude.
pub const MAX_DECIMAL_DIGITS: u32 = 30;

impl Decimal {
    /// The decimal an `f64` was written as (its shortest representation).
    pub fn from_f64(v: f64) -> Result<Decimal, String> {
        if !v.is_finite() {
            return Err(format!("{v} is not a finite number"));
        }
        let mut d = Decimal::parse(&format!("{v:?}"))?;
        d.value = v;
        Ok(d)
    }

    /// Parses `[-]digits[.digits][e[+-]digits]`.
    pub fn parse(s: &str) -> Result<Decimal, String> {
        let bad = || format!("{s:?} is not a decimal number");
        let too_big =
            || format!("{s:?} needs more than {MAX_DECIMAL_DIGITS} decimal places or digits before the point");
        let (negative, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().map_err(|_| bad())?),
            None => (rest, 0),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int_part.is_empty() && frac_part.is_empty()
            || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let frac_part = frac_part.trim_end_matches('0');
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        // value = digits × 10^(exp − frac_len)
        let mut scale = frac_part.len() as i64 - exp;
        let mut digits = digits.to_owned();
        if digits.is_empty() {
            return Ok(Decimal { value: 0.0, units: 0, scale: 0 });
        }
        if scale < 0 {
            if -scale > MAX_DECIMAL_DIGITS as i64 {
                return Err(too_big());
            }
            digits.extend(std::iter::repeat_n('0', (-scale) as usize));
            scale = 0;
        }
        if scale > MAX_DECIMAL_DIGITS as i64 || digits.len() as i64 - scale > MAX_DECIMAL_DIGITS as i64 {
            return Err(too_big());
        }
        if digits.len() > 38 {
            return Err(too_big());
        }
        let units: i128 = digits.parse().map_err(|_| bad())?;
        let units = if negative { -units } else { units };
        let value: f64 = s.parse().map_err(|_| bad())?;
        Ok(Decimal { value, units, scale: scale as u32 })
    }

    pub fn int(v: i64) -> Decimal {
        Decimal { value: v as f64, units: v as i128, scale: 0 }
    }

    pub fn ratio(&self) -> Ratio {
        Ratio::new(self.units, 10u128.pow(self.scale))
    }

    pub fn number(&self) -> Number {
        Number { approx: self.value, exact: Exact::Small(self.ratio()) }
    }
}

impl PartialEq for Decimal {
    /// Equal values (`0.2 == 0.20`).
    fn eq(&self, o: &Decimal) -> bool {
        self.ratio() == o.ratio()
    }
}

impl fmt::Display for Decimal {
    /// As the `f64` prints (as configured values always printed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.value, f)
    }
}

/// A figure as reported (`approx`, computed as it always was) and as
/// decided on (`exact`). Equality is that of the reported value; order and
/// rule decisions use `exact`. Serialized as the reported value alone.
#[derive(Clone, Debug)]
pub struct Number {
    pub approx: f64,
    pub exact: Exact,
}

impl Number {
    pub fn new(approx: f64, exact: impl Into<Exact>) -> Number {
        Number { approx, exact: exact.into() }
    }

    /// An integer count.
    pub fn count(v: i64) -> Number {
        Number { approx: v as f64, exact: Exact::Small(Ratio::int(v as i128)) }
    }

    /// `num / den` reported as `num as f64 / den as f64` (`den > 0`).
    pub fn ratio(num: i64, den: i64) -> Number {
        Number { approx: num as f64 / den as f64, exact: Exact::Small(Ratio::of(num, den)) }
    }

    pub fn to_f64(&self) -> f64 {
        self.approx
    }
}

impl PartialEq for Number {
    fn eq(&self, o: &Number) -> bool {
        self.approx == o.approx
    }
}

impl serde::Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.approx)
    }
}

impl<'de> serde::Deserialize<'de> for Number {
    /// Only reported values are stored (alert `values`), so the exact value
    /// read back is the decimal the number prints as.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Number, D::Error> {
        let v = f64::deserialize(d)?;
        let exact = Decimal::from_f64(v).map_or(Exact::Small(Ratio::ZERO), |d| Exact::Small(d.ratio()));
        Ok(Number { approx: v, exact })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i128, d: u128) -> Ratio {
        Ratio::new(n, d)
    }

    #[test]
    fn ratios_compare_exactly_whatever_their_size() {
        assert_eq!(r(1, 2), r(2, 4));
        assert!(r(1, 3) < r(333_333_333_333_333_334, 1_000_000_000_000_000_000));
        assert!(r(-1, 3) > r(-1, 2));
        assert!(r(-1, 3) < r(0, 7));
        // Cross products far beyond 128 bits: Euclid's path.
        let big = u128::MAX / 3;
        assert_eq!(r(big as i128, big), r(1, 1));
        assert!(r(i128::MAX, u128::MAX) < r(i128::MAX, u128::MAX - 1));
        assert!(r(i128::MAX - 1, u128::MAX) < r(i128::MAX, u128::MAX));
        assert_eq!(r(i128::MAX, u128::MAX).cmp(&r(i128::MAX, u128::MAX)), Ordering::Equal);
        assert!(r(i128::MIN + 1, u128::MAX) < r(i128::MIN + 2, u128::MAX));
        // (2^127 − 1)/(2^128 − 1) is just below 1/2.
        assert!(r(i128::MAX, u128::MAX) < r(1, 2));
        assert_eq!(r(7, 2).floor(), 3);
        assert_eq!(r(-7, 2).floor(), -4);
        assert_eq!(r(-8, 2).floor(), -4);
    }

    #[test]
    fn ratio_comparison_agrees_with_big_integers() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let shift = |v: u64| (v % 127) as u32;
            let a = (((next() as u128) << 64) | next() as u128) >> (shift(next()) + 1);
            let b = ((((next() as u128) << 64) | next() as u128) >> shift(next())).max(1);
            let c = (((next() as u128) << 64) | next() as u128) >> (shift(next()) + 1);
            let d = ((((next() as u128) << 64) | next() as u128) >> shift(next())).max(1);
            // A quarter of the pairs share a denominator (the fast path).
            let d = if next() % 4 == 0 { b } else { d };
            let (a, c) = (if next() % 2 == 0 { -(a as i128) } else { a as i128 }, c as i128);
            let want = r(a, b).big().cmp(&r(c, d).big());
            assert_eq!(r(a, b).cmp(&r(c, d)), want, "{a}/{b} vs {c}/{d}");
        }
    }

    #[test]
    fn decimals_are_read_as_written() {
        let d = |s: &str| Decimal::parse(s).unwrap();
        assert_eq!((d("0.15").units, d("0.15").scale), (15, 2));
        assert_eq!((d("70").units, d("70").scale), (70, 0));
        assert_eq!((d("70.0").units, d("70.0").scale), (70, 0));
        assert_eq!((d("1e3").units, d("1e3").scale), (1000, 0));
        assert_eq!((d("-2.5e-3").units, d("-2.5e-3").scale), (-25, 4));
        assert_eq!(d("0.15").ratio(), r(3, 20));
        for f in [0.15, 0.35, 0.2, 40.5, 1e-7, 123456.789, -0.5, 0.1 + 0.2] {
            let dec = Decimal::from_f64(f).unwrap();
            assert_eq!(dec.value, f);
            assert_eq!(dec.to_string(), f.to_string());
        }
        assert_eq!(Decimal::from_f64(0.15).unwrap().ratio(), r(15, 100), "not the binary 0.1499999…");
        assert!(Decimal::from_f64(1e-40).is_err());
        assert!(Decimal::from_f64(1e40).is_err());
        assert!(Decimal::from_f64(f64::NAN).is_err());
        for bad in ["", ".", "1.2.3", "abc", "1e", "--1"] {
            assert!(Decimal::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn big_ratios_compare_with_small_ones() {
        let huge = Exact::of_big(BigInt::from(u128::MAX) * 3u32, BigUint::from(u128::MAX));
        assert!(matches!(huge, Exact::Big(_)));
        assert_eq!(huge, Exact::Small(r(3, 1)));
        assert!(huge > Exact::Small(r(299_999, 100_000)));
        assert_eq!(huge.floor_i64(), 3);
        assert!((huge.to_f64() - 3.0).abs() < 1e-12);
        assert!(matches!(Exact::of_big(BigInt::from(5), BigUint::from(2u8)), Exact::Small(_)));
        // Rounded half away from zero, on both paths.
        assert_eq!(Exact::Small(r(1, 3)).round_scaled(1_000_000_000), 333_333_333);
        assert_eq!(Exact::Small(r(2, 3)).round_scaled(1_000_000_000), 666_666_667);
        assert_eq!(Exact::Small(r(1, 2)).round_scaled(1), 1);
        assert_eq!(Exact::Small(r(-1, 2)).round_scaled(1), -1);
        assert_eq!(Exact::Small(r(i128::MAX, u128::MAX)).round_scaled(1_000_000_000), 500_000_000);
        let third = Exact::of_big(BigInt::from(u128::MAX), BigUint::from(u128::MAX) * 3u32);
        assert_eq!(third.round_scaled(1_000_000_000), 333_333_333);
    }
}
