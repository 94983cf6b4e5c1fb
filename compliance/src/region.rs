//! Region policy: which ISO 3166-1 alpha-2 regions forbid showing children, and the
//! shared query decision ([`RegionPolicy::check_query`]) that the server and the
//! client both make.
//!
//! The policy fails closed: a request that names no region is treated as coming from
//! a restricted one. A region that is not an officially assigned code is an error,
//! never silently "unrestricted".

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::lexicon::{describes_child, ChildMatch};

/// The 249 officially assigned ISO 3166-1 alpha-2 codes, sorted. Exceptionally or
/// transitionally reserved codes (`EU`, `UK`, `UN`, ...) and user-assigned ones
/// (`XK`, `XX`, `ZZ`, ...) are not assigned.
#[rustfmt::skip]
const ASSIGNED: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Longest part of a bad input quoted back in an error message.
const QUOTE_LIMIT: usize = 16;

/// Why a region could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// Not two ASCII letters.
    #[error("region '{0}' is not an ISO 3166-1 alpha-2 code (two letters, e.g. DE)")]
    Malformed(String),
    /// Two letters, but not an officially assigned code.
    #[error("region '{0}' is not an officially assigned ISO 3166-1 alpha-2 code")]
    Unassigned(String),
}

/// Quotes (a bounded, escaped prefix of) untrusted input for an error message.
fn quote(input: &str) -> String {
    crate::quote::quote(input, QUOTE_LIMIT)
}

/// An officially assigned ISO 3166-1 alpha-2 region code, in upper case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionCode([u8; 2]);

impl RegionCode {
    /// Parses two ASCII letters (any case, surrounding whitespace ignored) that form
    /// an assigned code.
    ///
    /// # Errors
    /// [`RegionError::Malformed`] unless two ASCII letters, [`RegionError::Unassigned`]
    /// unless an officially assigned code.
    pub fn parse(input: &str) -> Result<Self, RegionError> {
        let trimmed = input.trim();
        let &[first, second] = trimmed.as_bytes() else {
            return Err(RegionError::Malformed(quote(trimmed)));
        };
        if !first.is_ascii_alphabetic() || !second.is_ascii_alphabetic() {
            return Err(RegionError::Malformed(quote(trimmed)));
        }
        let code = [first.to_ascii_uppercase(), second.to_ascii_uppercase()];
        if ASSIGNED
            .binary_search_by(|assigned| assigned.as_bytes().cmp(&code[..]))
            .is_err()
        {
            return Err(RegionError::Unassigned(trimmed.to_ascii_uppercase()));
        }
        Ok(RegionCode(code))
    }

    /// The code as an upper-case string, e.g. `"DE"`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters (checked in `parse`), so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for RegionCode {
    type Err = RegionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RegionCode::parse(s)
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({})", self.as_str())
    }
}

impl Serialize for RegionCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RegionCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RegionCode::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The outcome of [`RegionPolicy::check_query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The text may be served in this region.
    Allowed,
    /// The region is restricted and the text describes a child, as shown by the match.
    Blocked(ChildMatch),
}

impl Verdict {
    /// Whether the text must be refused.
    #[must_use]
    pub fn is_blocked(&self) -> bool {
        matches!(self, Verdict::Blocked(_))
    }
}

/// The set of regions where showing a child is forbidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RegionPolicy {
    restricted: BTreeSet<RegionCode>,
}

impl RegionPolicy {
    /// A policy restricting exactly `codes`.
    #[must_use]
    pub fn new(codes: impl IntoIterator<Item = RegionCode>) -> Self {
        RegionPolicy {
            restricted: codes.into_iter().collect(),
        }
    }

    /// Parses a configuration list such as `"DE, fr ,GB"`: codes separated by commas,
    /// semicolons and/or whitespace, any case. An empty list restricts no region
    /// (requests without a region are still restricted).
    ///
    /// # Errors
    /// The first code that [`RegionCode::parse`] rejects.
    pub fn parse_list(s: &str) -> Result<Self, RegionError> {
        s.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|part| !part.is_empty())
            .map(RegionCode::parse)
            .collect::<Result<BTreeSet<_>, _>>()
            .map(|restricted| RegionPolicy { restricted })
    }

    /// Whether `code` is one of the restricted regions.
    #[must_use]
    pub fn contains(&self, code: RegionCode) -> bool {
        self.restricted.contains(&code)
    }

    /// Whether a request from `region` is restricted. A missing or blank region is
    /// restricted (fail closed).
    ///
    /// # Errors
    /// A region that is present but malformed or unassigned (see [`RegionCode::parse`]).
    pub fn is_restricted(&self, region: Option<&str>) -> Result<bool, RegionError> {
        match region.map(str::trim) {
            None | Some("") => Ok(true),
            Some(region) => Ok(self.contains(RegionCode::parse(region)?)),
        }
    }

    /// The restricted regions, in alphabetical order.
    pub fn restricted_regions(&self) -> impl Iterator<Item = RegionCode> + '_ {
        self.restricted.iter().copied()
    }

    /// The decision shared by server and client (and usable for a caption): `text` is
    /// blocked iff `region` is restricted (see [`Self::is_restricted`]) and `text`
    /// describes a child.
    ///
    /// # Errors
    /// A bad region is an error whatever the text (see [`Self::is_restricted`]).
    pub fn check_query(&self, region: Option<&str>, text: &str) -> Result<Verdict, RegionError> {
        if !self.is_restricted(region)? {
            return Ok(Verdict::Allowed);
        }
        Ok(describes_child(text).map_or(Verdict::Allowed, Verdict::Blocked))
    }
}

impl FromStr for RegionPolicy {
    type Err = RegionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RegionPolicy::parse_list(s)
    }
}

/// Writes the codes as `"DE, FR, GB"`, which [`RegionPolicy::parse_list`] reads back.
impl fmt::Display for RegionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, code) in self.restricted.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(code.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexicon::Rule;
    use serde::de::value::{Error as ValueError, StrDeserializer};
    use serde::de::IntoDeserializer;

    fn code(s: &str) -> RegionCode {
        match RegionCode::parse(s) {
            Ok(code) => code,
            Err(error) => panic!("{s:?} should parse: {error}"),
        }
    }

    fn policy(s: &str) -> RegionPolicy {
        match RegionPolicy::parse_list(s) {
            Ok(policy) => policy,
            Err(error) => panic!("{s:?} should parse: {error}"),
        }
    }

    #[test]
    fn assigned_table_is_sorted_upper_case_and_complete() {
        assert!(ASSIGNED.windows(2).all(|w| w[0] < w[1]));
        assert!(ASSIGNED
            .iter()
            .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
        for assigned in ASSIGNED {
            assert_eq!(code(assigned).as_str(), assigned);
        }
    }

    #[test]
    fn parses_valid_codes_in_any_case() {
        assert_eq!(code("DE").as_str(), "DE");
        assert_eq!(code("de"), code("DE"));
        assert_eq!(code("gB").to_string(), "GB");
        assert_eq!(code(" fr\n"), code("FR"));
        assert_eq!("us".parse::<RegionCode>(), Ok(code("US")));
        assert_eq!(format!("{:?}", code("jp")), "RegionCode(JP)");
    }

    #[test]
    fn rejects_malformed_codes() {
        for bad in [
            "D", "DEU", "1A", "A1", "", "  ", "D-", "ÄÖ", "dé", "D E", "🇩🇪",
        ] {
            assert!(
                matches!(RegionCode::parse(bad), Err(RegionError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
        let error = RegionCode::parse("xyz").err();
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some("region 'xyz' is not an ISO 3166-1 alpha-2 code (two letters, e.g. DE)")
        );
        // Long or hostile input is quoted back short and printable.
        let long = format!("{}\u{7}", "a".repeat(100));
        let Err(RegionError::Malformed(quoted)) = RegionCode::parse(&long) else {
            panic!("long input should be malformed");
        };
        assert_eq!(quoted, format!("{}… (101 chars)", "a".repeat(QUOTE_LIMIT)));
        let Err(error) = RegionCode::parse("\u{202E}d\ne") else {
            panic!("hostile input should be malformed");
        };
        assert_eq!(
            error.to_string(),
            "region '\\u{202E}d\\ne' is not an ISO 3166-1 alpha-2 code (two letters, e.g. DE)"
        );
    }

    #[test]
    fn rejects_unassigned_codes() {
        for unassigned in ["XX", "xx", "EU", "UK", "XK", "ZZ", "AA", "UN"] {
            assert!(
                matches!(
                    RegionCode::parse(unassigned),
                    Err(RegionError::Unassigned(_))
                ),
                "{unassigned:?} should be unassigned"
            );
        }
        assert_eq!(
            RegionCode::parse("eu")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("region 'EU' is not an officially assigned ISO 3166-1 alpha-2 code")
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let de: StrDeserializer<'_, ValueError> = "gb".into_deserializer();
        assert_eq!(RegionCode::deserialize(de), Ok(code("GB")));
        let de: StrDeserializer<'_, ValueError> = "GBR".into_deserializer();
        let error = RegionCode::deserialize(de).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("region 'GBR' is not an ISO 3166-1 alpha-2 code (two letters, e.g. DE)")
        );
    }

    #[test]
    fn parses_policy_lists() {
        let parsed = policy("DE, fr ,GB");
        let codes: Vec<String> = parsed.restricted_regions().map(|c| c.to_string()).collect();
        assert_eq!(codes, ["DE", "FR", "GB"]);
        assert_eq!(parsed.to_string(), "DE, FR, GB");
        assert_eq!(policy(&parsed.to_string()), parsed);
        assert_eq!(policy("gb;de fr,,de"), parsed);
        assert_eq!(
            parsed,
            RegionPolicy::new([code("GB"), code("FR"), code("DE")])
        );
        assert_eq!("DE,FR,GB".parse::<RegionPolicy>(), Ok(parsed));
        assert_eq!(policy("").restricted_regions().count(), 0);
        assert_eq!(policy(" , ").to_string(), "");
        assert!(matches!(
            RegionPolicy::parse_list("DE, XX"),
            Err(RegionError::Unassigned(_))
        ));
        assert!(matches!(
            RegionPolicy::parse_list("DE/FR"),
            Err(RegionError::Malformed(_))
        ));
    }

    #[test]
    fn restriction_fails_closed() {
        let parsed = policy("DE, FR");
        assert_eq!(parsed.is_restricted(None), Ok(true));
        assert_eq!(parsed.is_restricted(Some("")), Ok(true));
        assert_eq!(parsed.is_restricted(Some("  ")), Ok(true));
        assert_eq!(parsed.is_restricted(Some("de")), Ok(true));
        assert_eq!(parsed.is_restricted(Some("FR")), Ok(true));
        assert_eq!(parsed.is_restricted(Some("US")), Ok(false));
        assert!(parsed.is_restricted(Some("DEU")).is_err());
        assert!(parsed.is_restricted(Some("XX")).is_err());
        assert!(parsed.contains(code("DE")));
        assert!(!parsed.contains(code("US")));
        // Even a policy restricting nothing restricts an unknown origin.
        assert_eq!(policy("").is_restricted(None), Ok(true));
        assert_eq!(policy("").is_restricted(Some("DE")), Ok(false));
    }

    #[test]
    fn check_query_combinations() {
        let parsed = policy("DE");
        let child = "a little girl on a swing";
        let adult = "a young woman on a swing";

        let verdict = parsed.check_query(Some("DE"), child);
        let Ok(Verdict::Blocked(found)) = verdict else {
            panic!("expected a block, got {verdict:?}");
        };
        assert_eq!(found.rule, Rule::Word("girl"));
        assert_eq!(found.matched, "girl");
        assert!(parsed
            .check_query(Some("de"), child)
            .is_ok_and(|v| v.is_blocked()));
        assert!(parsed
            .check_query(None, child)
            .is_ok_and(|v| v.is_blocked()));
        assert!(parsed
            .check_query(Some(""), "Two kids")
            .is_ok_and(|v| v.is_blocked()));

        assert_eq!(parsed.check_query(Some("DE"), adult), Ok(Verdict::Allowed));
        assert_eq!(parsed.check_query(None, adult), Ok(Verdict::Allowed));
        assert_eq!(parsed.check_query(Some("US"), child), Ok(Verdict::Allowed));
        assert_eq!(parsed.check_query(Some("us"), adult), Ok(Verdict::Allowed));
        assert_eq!(parsed.check_query(Some("DE"), ""), Ok(Verdict::Allowed));

        assert!(matches!(
            parsed.check_query(Some("Germany"), adult),
            Err(RegionError::Malformed(_))
        ));
        assert!(matches!(
            parsed.check_query(Some("EU"), child),
            Err(RegionError::Unassigned(_))
        ));
        assert!(!Verdict::Allowed.is_blocked());
    }
}
