//! `BFDProfile`: the timers and options of BFD sessions (RFC 5880) that
//! BGPPeers name in `bfdProfile`. Field names and ranges are MetalLB's, so
//! a MetalLB profile reads the same here.

// See bgp.rs: kube's derive repeats `type_ = "string"` in printcolumns.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::bgp::PasswordSource;
use crate::status::ConditionsStatus;

/// `BFDProfile.spec`.
#[derive(
    CustomResource, KubeSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[kube(
    group = "petrel.dev",
    version = "v1alpha1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    status = "ConditionsStatus",
    derive = "PartialEq",
    category = "petrel",
    doc = "Timers and options of the BFD sessions of the BGPPeers that name it in bfdProfile.",
    printcolumn(name = "RX", type_ = "integer", json_path = ".spec.receiveInterval"),
    printcolumn(name = "TX", type_ = "integer", json_path = ".spec.transmitInterval"),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.echoMode) || !self.echoMode")
    .message("echoMode is not supported: BFD runs in asynchronous mode (BIRD has no Echo function, and FRR's works only between FRR peers)"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdProfileSpec {
    /// The shortest interval, in milliseconds, at which this end can
    /// receive control packets (10 to 60000); default 300.
    #[schemars(range(min = 10, max = 60000), extend("default" = 300))]
    pub receive_interval: Option<u32>,
    /// The shortest interval, in milliseconds, at which this end wants to
    /// send control packets (10 to 60000); default 300.
    #[schemars(range(min = 10, max = 60000), extend("default" = 300))]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the remote end is declared down (2 to 255);
    /// default 3.
    #[schemars(range(min = 2, max = 255), extend("default" = 3))]
    pub detect_multiplier: Option<u32>,
    /// The Echo function: not supported (must be false or unset).
    pub echo_mode: Option<bool>,
    /// Echo interval in milliseconds (10 to 60000): accepted for MetalLB's
    /// profiles, unused without Echo.
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// Send nothing until the remote end speaks first.
    pub passive_mode: Option<bool>,
    /// Multihop sessions: the smallest TTL a received packet may have
    /// (1 to 254); default 254, one router away.
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
    /// Authentication (RFC 5880 §6.7); none by default.
    pub authentication: Option<BfdAuthSpec>,
}

/// `BFDProfile.spec.authentication`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdAuthSpec {
    /// `keyed-sha1` (default), `meticulous-keyed-sha1`, `keyed-md5`,
    /// `meticulous-keyed-md5` or `simple-password`.
    #[schemars(extend("enum" = ["keyed-sha1", "meticulous-keyed-sha1", "keyed-md5", "meticulous-keyed-md5", "simple-password"]))]
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The key ID both ends use (0 to 255). Required.
    #[schemars(required, range(min = 0, max = 255))]
    #[serde(rename = "keyID")]
    pub key_id: Option<u32>,
    /// The secret (1 to 20 bytes for SHA1, 16 for MD5 and passwords).
    /// Required.
    #[schemars(required)]
    pub secret: Option<PasswordSource>,
}
