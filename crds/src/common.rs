//! Types every kind shares: label selectors, ranges, durations, and the
//! schemas of the string-typed fields (addresses, CIDRs) that `schemars`
//! cannot describe precisely by itself.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// One entry of a list of ranges (`{cidr: 10.96.0.0/16}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrSpec {
    /// The range.
    #[schemars(with = "Cidr")]
    pub cidr: IpNet,
}

/// A Kubernetes label selector (`metav1.LabelSelector`): every `matchLabels`
/// pair and every expression must hold; an empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Further conditions (at most 64).
    // Bounded so that the API server's cost estimate of the CEL rule on
    // each requirement stays within its budget, also in lists of selectors.
    #[schemars(length(max = 64))]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One condition of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, kube::KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
// The same rule Kubernetes applies to its own selectors, so a selector the
// agent would skip is refused when it is written instead.
#[x_kube(validation = Rule::new(
    "(self.operator == 'In' || self.operator == 'NotIn') ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)"
).message("In and NotIn need at least one value; Exists and DoesNotExist take none"))]
pub struct LabelSelectorRequirement {
    /// The label.
    #[schemars(length(min = 1))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    // The length bound keeps the CEL string comparisons cheap in the API
    // server's cost estimate.
    #[schemars(extend("maxLength" = 12))]
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default)]
    pub values: Vec<String>,
}

/// The operator of a label selector requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label has one of the values.
    In,
    /// The label is absent or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let pairs = self
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        pairs
            && self.match_expressions.iter().flatten().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => !value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Problems a selector has that Kubernetes would refuse.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.match_expressions.iter().flatten().enumerate() {
            match r.operator {
                SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}]: {:?} needs at least one value",
                        r.operator
                    ));
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist
                    if !r.values.is_empty() =>
                {
                    return Err(format!(
                        "matchExpressions[{i}]: {:?} takes no values",
                        r.operator
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// A reference to a key of a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A duration in whole seconds, written as a number (`90`) or in Kubernetes
/// style (`"90s"`, `"1m30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Seconds(pub u32);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl Seconds {
    /// Parses `90`, `90s`, `2m`, `1m30s`, `1h`.
    pub fn parse(s: &str) -> Result<Seconds, String> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u32>() {
            return Ok(Seconds(n));
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => {
                    return Err(format!(
                        "unknown unit {c:?} in duration {s:?} (use s, m or h)"
                    ));
                }
            };
            let n: u64 = num
                .parse()
                .map_err(|_| format!("missing number before {c:?} in {s:?}"))?;
            total = total.saturating_add(n.saturating_mul(unit));
            num.clear();
        }
        if !num.is_empty() {
            return Err(format!("duration {s:?} ends without a unit"));
        }
        u32::try_from(total)
            .map(Seconds)
            .map_err(|_| format!("duration {s:?} is too long"))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Seconds(n)),
            Raw::Text(t) => Seconds::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// What [`Seconds::parse`] accepts as text, for the schema: digits alone, or
/// digits each followed by `h`, `m` or `s`.
pub const DURATION_PATTERN: &str = "^([0-9]+|([0-9]+[hms])+)$";

impl JsonSchema for Seconds {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Seconds".into()
    }

    // Both spellings are valid, so the schema is int-or-string: the bounds
    // apply to numbers and the pattern to text, as the API server does for
    // such fields. Per-field limits (a hold time's 65535) are added where the
    // field is declared.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration in whole seconds: a number (90) or text (\"90s\", \"1m30s\", \"1h\").",
            "x-kubernetes-int-or-string": true,
            "minimum": 0,
            "maximum": u32::MAX,
            "pattern": DURATION_PATTERN,
        })
    }
}

/// Schema of a CIDR string (`10.0.0.0/24`, `fd00::/64`).
///
/// Used with `#[schemars(with = "Cidr")]` on [`IpNet`] fields: the API server
/// checks the `cidr` format, both families.
pub struct Cidr;

impl JsonSchema for Cidr {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "cidr",
            // The longest IPv6 text form plus "/128".
            "maxLength": 49,
        })
    }
}

/// Schema of an IPv4 or IPv6 address string.
///
/// The API server knows the `ipv4` and `ipv6` formats but no format for
/// either, hence the `anyOf`.
pub struct IpAddress;

impl JsonSchema for IpAddress {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "IpAddress".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
            "maxLength": 45,
        })
    }
}

/// Schema of an IPv4 address string (router IDs, cluster IDs).
pub struct Ipv4Address;

impl JsonSchema for Ipv4Address {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Ipv4Address".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "ipv4",
            "maxLength": 15,
        })
    }
}
