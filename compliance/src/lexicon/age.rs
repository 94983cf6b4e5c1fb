//! Stated ages: `7-year-old`, `12 years old`, `4yo`, `age 5`, `3-month-old`.

use super::{is_label_gap, AgeUnit, Tokens, CHILD_AGE_LIMIT};

#[derive(Clone, Copy)]
enum Amount {
    Exact(u32),
    /// "few", "couple", "several".
    Vague,
}

struct Quantity<'k> {
    amount: Amount,
    /// Letters glued to a number: "yo" in "4yo", "s" in "12s".
    suffix: &'k str,
    /// Index past the quantity's last token.
    end: usize,
}

pub(super) struct StatedAge {
    pub(super) value: Option<u32>,
    pub(super) unit: AgeUnit,
    pub(super) end: usize,
}

impl StatedAge {
    pub(super) fn is_child(&self) -> bool {
        self.unit != AgeUnit::Years || self.value.is_none_or(|years| years < CHILD_AGE_LIMIT)
    }
}

/// Splits a key that starts with digits into its whole value and any glued letters.
/// Numbers too large for `u32` saturate (they are not child ages anyway).
fn split_number(key: &str) -> Option<(u32, &str)> {
    let digits_end = key.find(|c: char| !c.is_ascii_digit()).unwrap_or(key.len());
    if digits_end == 0 {
        return None;
    }
    let value = key[..digits_end].parse::<u32>().unwrap_or(u32::MAX);
    let mut rest = &key[digits_end..];
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    Some((value, rest))
}

fn number_word(key: &str) -> Option<u32> {
    Some(match key {
        "zero" => 0,
        "one" => 1,
        "two" => 2,
        "three" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        "eleven" => 11,
        "twelve" => 12,
        "thirteen" => 13,
        "fourteen" => 14,
        "fifteen" => 15,
        "sixteen" => 16,
        "seventeen" => 17,
        "eighteen" => 18,
        "nineteen" => 19,
        "twenty" => 20,
        "thirty" => 30,
        "forty" => 40,
        "fifty" => 50,
        "sixty" => 60,
        "seventy" => 70,
        "eighty" => 80,
        "ninety" => 90,
        _ => return None,
    })
}

fn age_unit(key: &str) -> Option<AgeUnit> {
    Some(match key {
        "year" | "years" | "yr" | "yrs" => AgeUnit::Years,
        "month" | "months" | "mo" | "mos" | "mth" | "mths" => AgeUnit::Months,
        "week" | "weeks" | "wk" | "wks" => AgeUnit::Weeks,
        "day" | "days" => AgeUnit::Days,
        _ => return None,
    })
}

impl Tokens<'_> {
    /// A number starting at token `i`. With `loose`, also "a"/"an" (one) and the
    /// vague "few", "couple (of)", "several".
    fn quantity(&self, i: usize, loose: bool) -> Option<Quantity<'_>> {
        let key = self.key(i)?;
        if let Some((value, suffix)) = split_number(key) {
            return Some(Quantity {
                amount: Amount::Exact(value),
                suffix,
                end: i + 1,
            });
        }
        let exact = |value, end| {
            Some(Quantity {
                amount: Amount::Exact(value),
                suffix: "",
                end,
            })
        };
        if let Some(value) = number_word(key) {
            // "twenty-one", "thirty five"
            if value >= 20 {
                let ones = self.joined_key(i + 1).and_then(number_word);
                if let Some(ones @ 1..=9) = ones {
                    return exact(value + ones, i + 2);
                }
            }
            return exact(value, i + 1);
        }
        if !loose {
            return None;
        }
        match key {
            "a" | "an" => exact(1, i + 1),
            "few" | "couple" | "several" => {
                let end = if self.joined_key(i + 1) == Some("of") {
                    i + 2
                } else {
                    i + 1
                };
                Some(Quantity {
                    amount: Amount::Vague,
                    suffix: "",
                    end,
                })
            }
            _ => None,
        }
    }

    /// The index past an "old"/"olds" joined to token `i - 1`.
    fn old_at(&self, i: usize) -> Option<usize> {
        matches!(self.joined_key(i), Some("old" | "olds")).then_some(i + 1)
    }

    /// "7-year-old", "12 years old", "two and a half year olds", "4yo", "2 y/o".
    pub(super) fn stated_age(&self, i: usize) -> Option<StatedAge> {
        let quantity = self.quantity(i, true)?;
        let value = match quantity.amount {
            Amount::Exact(value) => Some(value),
            Amount::Vague => None,
        };
        let age = |unit, end| Some(StatedAge { value, unit, end });
        if !quantity.suffix.is_empty() {
            if quantity.suffix == "yo" {
                return age(AgeUnit::Years, quantity.end);
            }
            let unit = age_unit(quantity.suffix)?;
            return age(unit, self.old_at(quantity.end)?);
        }
        let mut j = quantity.end;
        if self.joined_key(j) == Some("and")
            && self.joined_key(j + 1) == Some("a")
            && self.joined_key(j + 2) == Some("half")
        {
            j += 3;
        }
        match self.joined_key(j)? {
            "yo" => age(AgeUnit::Years, j + 1),
            "y" if self.tight_key(j + 1) == Some("o") => age(AgeUnit::Years, j + 2),
            unit => age(age_unit(unit)?, self.old_at(j + 1)?),
        }
    }

    /// "age 5", "aged 9", "ages 3 to 5", "at the age of 4", "age: 3", "aged 18 months".
    pub(super) fn age_statement(&self, i: usize) -> Option<StatedAge> {
        if !matches!(self.key(i)?, "age" | "aged" | "ages") {
            return None;
        }
        let mut j = i + 1;
        if self.joined_key(j) == Some("of") {
            j += 1;
        }
        if !is_label_gap(self.gap(j)?) {
            return None;
        }
        let quantity = self.quantity(j, false)?;
        let Amount::Exact(value) = quantity.amount else {
            return None;
        };
        let (unit, end) = match quantity.suffix {
            "" => match self.joined_key(quantity.end).and_then(age_unit) {
                Some(unit) => (unit, quantity.end + 1),
                None => (AgeUnit::Years, quantity.end),
            },
            "yo" => (AgeUnit::Years, quantity.end),
            suffix => (age_unit(suffix)?, quantity.end),
        };
        let end = self.old_at(end).unwrap_or(end);
        Some(StatedAge {
            value: Some(value),
            unit,
            end,
        })
    }
}
