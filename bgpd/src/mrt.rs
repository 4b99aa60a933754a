//! Reading MRT routing information export files (RFC 6396, RFC 8050).
//!
//! [`MrtReader`] cuts a byte stream (plain, gzip or bzip2) into records;
//! [`MrtRecord::parse`] interprets one. The two steps are separate so a record
//! whose body is malformed is reported and skipped while reading goes on, and
//! only a damaged record header (which loses the framing) stops a file.
//!
//! Supported: BGP4MP and BGP4MP_ET (MESSAGE, MESSAGE_AS4 and their LOCAL and
//! ADDPATH variants, STATE_CHANGE and STATE_CHANGE_AS4) and TABLE_DUMP_V2
//! (PEER_INDEX_TABLE, RIB_IPV4/IPV6_UNICAST/MULTICAST, RIB_GENERIC, and the
//! ADDPATH variants). Other record types are returned as [`MrtBody::Unsupported`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::wire::open::Open;
use crate::wire::reader::Reader;
use crate::wire::{AFI_IPV4, AFI_IPV6, AfiSafi, SAFI_UNICAST, WireContext};

/// MRT record types used here.
pub mod mrt_type {
    /// TABLE_DUMP (RFC 6396 §4.2, deprecated).
    pub const TABLE_DUMP: u16 = 12;
    /// TABLE_DUMP_V2.
    pub const TABLE_DUMP_V2: u16 = 13;
    /// BGP4MP.
    pub const BGP4MP: u16 = 16;
    /// BGP4MP_ET (with microsecond timestamps).
    pub const BGP4MP_ET: u16 = 17;
}

/// BGP4MP subtypes (RFC 6396 §4.4, RFC 8050 §3).
pub mod bgp4mp {
    /// STATE_CHANGE.
    pub const STATE_CHANGE: u16 = 0;
    /// MESSAGE.
    pub const MESSAGE: u16 = 1;
    /// MESSAGE_AS4.
    pub const MESSAGE_AS4: u16 = 4;
    /// STATE_CHANGE_AS4.
    pub const STATE_CHANGE_AS4: u16 = 5;
    /// MESSAGE_LOCAL.
    pub const MESSAGE_LOCAL: u16 = 6;
    /// MESSAGE_AS4_LOCAL.
    pub const MESSAGE_AS4_LOCAL: u16 = 7;
    /// MESSAGE_ADDPATH.
    pub const MESSAGE_ADDPATH: u16 = 8;
    /// MESSAGE_AS4_ADDPATH.
    pub const MESSAGE_AS4_ADDPATH: u16 = 9;
    /// MESSAGE_LOCAL_ADDPATH.
    pub const MESSAGE_LOCAL_ADDPATH: u16 = 10;
    /// MESSAGE_AS4_LOCAL_ADDPATH.
    pub const MESSAGE_AS4_LOCAL_ADDPATH: u16 = 11;
}

/// TABLE_DUMP_V2 subtypes (RFC 6396 §4.3, RFC 8050 §4).
pub mod table_dump_v2 {
    /// PEER_INDEX_TABLE.
    pub const PEER_INDEX_TABLE: u16 = 1;
    /// RIB_IPV4_UNICAST.
    pub const RIB_IPV4_UNICAST: u16 = 2;
    /// RIB_IPV4_MULTICAST.
    pub const RIB_IPV4_MULTICAST: u16 = 3;
    /// RIB_IPV6_UNICAST.
    pub const RIB_IPV6_UNICAST: u16 = 4;
    /// RIB_IPV6_MULTICAST.
    pub const RIB_IPV6_MULTICAST: u16 = 5;
    /// RIB_GENERIC.
    pub const RIB_GENERIC: u16 = 6;
    /// RIB_IPV4_UNICAST_ADDPATH.
    pub const RIB_IPV4_UNICAST_ADDPATH: u16 = 8;
    /// RIB_IPV4_MULTICAST_ADDPATH.
    pub const RIB_IPV4_MULTICAST_ADDPATH: u16 = 9;
    /// RIB_IPV6_UNICAST_ADDPATH.
    pub const RIB_IPV6_UNICAST_ADDPATH: u16 = 10;
    /// RIB_IPV6_MULTICAST_ADDPATH.
    pub const RIB_IPV6_MULTICAST_ADDPATH: u16 = 11;
    /// RIB_GENERIC_ADDPATH.
    pub const RIB_GENERIC_ADDPATH: u16 = 12;
}

/// Why an MRT file or record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MrtError {
    /// The underlying reader failed (including a corrupt compressed stream).
    #[error("read error at offset {offset}: {source}")]
    Io {
        /// Offset in the decompressed stream.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The file ends inside a record; nothing after it can be framed.
    #[error(
        "record at offset {offset} is truncated: header says {expected} octets, {available} remain"
    )]
    Truncated {
        /// Offset of the record.
        offset: u64,
        /// Octets the header announced (header included).
        expected: u64,
        /// Octets that were there.
        available: u64,
    },
    /// A record whose body does not parse; the next record can still be read.
    #[error("record at offset {offset} (type {mrt_type} subtype {subtype}): {reason}")]
    BadRecord {
        /// Offset of the record.
        offset: u64,
        /// Record type.
        mrt_type: u16,
        /// Record subtype.
        subtype: u16,
        /// What was wrong.
        reason: String,
    },
}

/// A framed MRT record whose body is not yet interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MrtRecord {
    /// Offset of the record header in the (decompressed) stream.
    pub offset: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: u32,
    /// Microseconds, for the _ET types.
    pub microseconds: Option<u32>,
    /// Record type.
    pub mrt_type: u16,
    /// Record subtype.
    pub subtype: u16,
    /// The body (after the microsecond field for _ET types).
    pub body: Vec<u8>,
}

/// Cuts an MRT stream into records.
#[derive(Debug)]
pub struct MrtReader<R> {
    inner: R,
    offset: u64,
    done: bool,
}

/// Opens a file, recognising gzip and bzip2 compression by their magic numbers.
pub fn open_file(path: &Path) -> io::Result<MrtReader<Box<dyn Read>>> {
    let file = File::open(path)?;
    Ok(MrtReader::new(decompress(BufReader::new(file))?))
}

/// Wraps a reader in the decompressor its first octets call for.
pub fn decompress<R: BufRead + 'static>(mut r: R) -> io::Result<Box<dyn Read>> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

impl<R: Read> MrtReader<R> {
    /// A reader over an uncompressed stream.
    pub fn new(inner: R) -> Self {
        MrtReader {
            inner,
            offset: 0,
            done: false,
        }
    }

    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, MrtError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(MrtError::Io {
                        offset: self.offset + got as u64,
                        source,
                    });
                }
            }
        }
        Ok(got)
    }

    fn next_record(&mut self) -> Result<Option<MrtRecord>, MrtError> {
        let offset = self.offset;
        let mut header = [0u8; 12];
        let got = self.read_full(&mut header)?;
        if got == 0 {
            return Ok(None);
        }
        if got < header.len() {
            return Err(MrtError::Truncated {
                offset,
                expected: header.len() as u64,
                available: got as u64,
            });
        }
        let timestamp = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let mrt_type = u16::from_be_bytes([header[4], header[5]]);
        let subtype = u16::from_be_bytes([header[6], header[7]]);
        let len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        // Read in bounded steps so a corrupt length cannot make us allocate 4 GiB
        // up front for a record that is not there.
        let mut body = Vec::with_capacity((len as usize).min(1 << 16));
        let read = (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut body)
            .map_err(|source| MrtError::Io {
                offset: offset + 12,
                source,
            })?;
        self.offset += 12 + read as u64;
        if read < len as usize {
            return Err(MrtError::Truncated {
                offset,
                expected: 12 + u64::from(len),
                available: 12 + read as u64,
            });
        }
        let mut microseconds = None;
        if mrt_type == mrt_type::BGP4MP_ET {
            if body.len() < 4 {
                return Err(MrtError::BadRecord {
                    offset,
                    mrt_type,
                    subtype,
                    reason: "microsecond timestamp missing".into(),
                });
            }
            microseconds = Some(u32::from_be_bytes([body[0], body[1], body[2], body[3]]));
            body.drain(..4);
        }
        Ok(Some(MrtRecord {
            offset,
            timestamp,
            microseconds,
            mrt_type,
            subtype,
            body,
        }))
    }
}

impl<R: Read> Iterator for MrtReader<R> {
    type Item = Result<MrtRecord, MrtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e @ MrtError::BadRecord { .. }) => Some(Err(e)),
            Err(e) => {
                // Framing is lost: nothing after this point can be trusted.
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The interpreted body of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MrtBody {
    /// A BGP message as seen on a session.
    Bgp4mpMessage(Bgp4mpMessage),
    /// A session state change.
    Bgp4mpStateChange(StateChange),
    /// The peer table that RIB records refer to.
    PeerIndexTable(PeerIndexTable),
    /// The routes for one prefix.
    Rib(RibRecord),
    /// A record type or subtype this reader does not interpret.
    Unsupported,
}

/// The two ends of a BGP4MP session as an MRT record gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bgp4mpPeers {
    /// The peer's ASN.
    pub peer_as: u32,
    /// The recording speaker's ASN.
    pub local_as: u32,
    /// Interface index.
    pub interface_index: u16,
    /// The peer's address.
    pub peer_ip: IpAddr,
    /// The recording speaker's address.
    pub local_ip: IpAddr,
}

/// A BGP4MP MESSAGE record of any variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp4mpMessage {
    /// Who the session is between.
    pub peers: Bgp4mpPeers,
    /// The header used 4-octet ASNs (an `_AS4` subtype). This says nothing
    /// certain about the session's AS_PATH encoding.
    pub as4_header: bool,
    /// Sent by the recording speaker (a `_LOCAL` subtype) rather than received.
    pub local: bool,
    /// An `_ADDPATH` subtype: NLRI carry path identifiers (RFC 8050).
    pub add_path: bool,
    /// The complete BGP message, header included.
    pub message: Vec<u8>,
}

/// A BGP4MP STATE_CHANGE record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// Who the session is between.
    pub peers: Bgp4mpPeers,
    /// FSM state before (1 Idle ... 6 Established).
    pub old_state: u16,
    /// FSM state after.
    pub new_state: u16,
}

/// FSM state names used in STATE_CHANGE records.
pub fn state_name(state: u16) -> &'static str {
    match state {
        1 => "Idle",
        2 => "Connect",
        3 => "Active",
        4 => "OpenSent",
        5 => "OpenConfirm",
        6 => "Established",
        _ => "unknown",
    }
}

/// TABLE_DUMP_V2 PEER_INDEX_TABLE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIndexTable {
    /// The collector's BGP identifier.
    pub collector_id: Ipv4Addr,
    /// The view name (often empty).
    pub view_name: String,
    /// The peers, indexed by RIB entries.
    pub peers: Vec<PeerEntry>,
}

/// One peer of a PEER_INDEX_TABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer's BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// The peer's address.
    pub ip: IpAddr,
    /// The peer's ASN.
    pub asn: u32,
}

/// The NLRI a RIB record is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RibNlri {
    /// An IPv4 or IPv6 prefix.
    Prefix(IpNet),
    /// A RIB_GENERIC NLRI of a family kept opaque.
    Opaque(Vec<u8>),
}

/// A TABLE_DUMP_V2 RIB record: every peer's route for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibRecord {
    /// Sequence number.
    pub sequence: u32,
    /// The family.
    pub afi_safi: AfiSafi,
    /// Entries carry path identifiers (an `_ADDPATH` subtype).
    pub add_path: bool,
    /// The prefix.
    pub nlri: RibNlri,
    /// One entry per peer (and path).
    pub entries: Vec<RibEntry>,
}

/// One route in a RIB record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibEntry {
    /// Index into the PEER_INDEX_TABLE.
    pub peer_index: u16,
    /// When the route was received.
    pub originated_time: u32,
    /// Path identifier (ADDPATH subtypes).
    pub path_id: Option<u32>,
    /// The encoded path attributes (4-octet ASNs, abbreviated MP_REACH_NLRI);
    /// decode with [`crate::wire::attr::decode_attributes`] and
    /// [`crate::wire::attr::AttrSource::MrtRib`].
    pub attributes: Vec<u8>,
}

impl MrtRecord {
    /// Interprets the body.
    pub fn parse(&self) -> Result<MrtBody, MrtError> {
        let bad = |reason: &str| MrtError::BadRecord {
            offset: self.offset,
            mrt_type: self.mrt_type,
            subtype: self.subtype,
            reason: reason.to_string(),
        };
        let mut r = Reader::new(&self.body);
        match (self.mrt_type, self.subtype) {
            (mrt_type::BGP4MP | mrt_type::BGP4MP_ET, sub) => {
                use bgp4mp::*;
                let (as4, is_message) = match sub {
                    STATE_CHANGE => (false, false),
                    STATE_CHANGE_AS4 => (true, false),
                    MESSAGE | MESSAGE_LOCAL | MESSAGE_ADDPATH | MESSAGE_LOCAL_ADDPATH => {
                        (false, true)
                    }
                    MESSAGE_AS4
                    | MESSAGE_AS4_LOCAL
                    | MESSAGE_AS4_ADDPATH
                    | MESSAGE_AS4_LOCAL_ADDPATH => (true, true),
                    _ => return Ok(MrtBody::Unsupported),
                };
                let peers = parse_peers(&mut r, as4).map_err(|_| bad("peer fields truncated"))?;
                if is_message {
                    return Ok(MrtBody::Bgp4mpMessage(Bgp4mpMessage {
                        peers,
                        as4_header: as4,
                        local: matches!(
                            sub,
                            MESSAGE_LOCAL
                                | MESSAGE_AS4_LOCAL
                                | MESSAGE_LOCAL_ADDPATH
                                | MESSAGE_AS4_LOCAL_ADDPATH
                        ),
                        add_path: sub >= MESSAGE_ADDPATH,
                        message: r.rest().to_vec(),
                    }));
                }
                let (Ok(old_state), Ok(new_state)) = (r.u16(), r.u16()) else {
                    return Err(bad("state fields truncated"));
                };
                if !r.is_empty() {
                    return Err(bad("octets after the state fields"));
                }
                Ok(MrtBody::Bgp4mpStateChange(StateChange {
                    peers,
                    old_state,
                    new_state,
                }))
            }
            (mrt_type::TABLE_DUMP_V2, table_dump_v2::PEER_INDEX_TABLE) => parse_peer_index(&mut r)
                .map_err(bad)
                .map(MrtBody::PeerIndexTable),
            (mrt_type::TABLE_DUMP_V2, sub) => {
                use table_dump_v2::*;
                let (family, add_path) = match sub {
                    RIB_IPV4_UNICAST => (Some(AfiSafi::IPV4_UNICAST), false),
                    RIB_IPV4_MULTICAST => (Some(AfiSafi::new(AFI_IPV4, 2)), false),
                    RIB_IPV6_UNICAST => (Some(AfiSafi::IPV6_UNICAST), false),
                    RIB_IPV6_MULTICAST => (Some(AfiSafi::new(AFI_IPV6, 2)), false),
                    RIB_GENERIC => (None, false),
                    RIB_IPV4_UNICAST_ADDPATH => (Some(AfiSafi::IPV4_UNICAST), true),
                    RIB_IPV4_MULTICAST_ADDPATH => (Some(AfiSafi::new(AFI_IPV4, 2)), true),
                    RIB_IPV6_UNICAST_ADDPATH => (Some(AfiSafi::IPV6_UNICAST), true),
                    RIB_IPV6_MULTICAST_ADDPATH => (Some(AfiSafi::new(AFI_IPV6, 2)), true),
                    RIB_GENERIC_ADDPATH => (None, true),
                    _ => return Ok(MrtBody::Unsupported),
                };
                parse_rib(&mut r, family, add_path)
                    .map_err(bad)
                    .map(MrtBody::Rib)
            }
            _ => Ok(MrtBody::Unsupported),
        }
    }

    /// The record's type and subtype names, e.g. `BGP4MP_ET/MESSAGE_AS4`.
    pub fn type_name(&self) -> String {
        let ty = match self.mrt_type {
            mrt_type::TABLE_DUMP => "TABLE_DUMP",
            mrt_type::TABLE_DUMP_V2 => "TABLE_DUMP_V2",
            mrt_type::BGP4MP => "BGP4MP",
            mrt_type::BGP4MP_ET => "BGP4MP_ET",
            t => return format!("TYPE_{t}/{}", self.subtype),
        };
        let sub = match (self.mrt_type, self.subtype) {
            (mrt_type::BGP4MP | mrt_type::BGP4MP_ET, s) => match s {
                0 => "STATE_CHANGE",
                1 => "MESSAGE",
                4 => "MESSAGE_AS4",
                5 => "STATE_CHANGE_AS4",
                6 => "MESSAGE_LOCAL",
                7 => "MESSAGE_AS4_LOCAL",
                8 => "MESSAGE_ADDPATH",
                9 => "MESSAGE_AS4_ADDPATH",
                10 => "MESSAGE_LOCAL_ADDPATH",
                11 => "MESSAGE_AS4_LOCAL_ADDPATH",
                _ => "",
            },
            (mrt_type::TABLE_DUMP_V2, s) => match s {
                1 => "PEER_INDEX_TABLE",
                2 => "RIB_IPV4_UNICAST",
                3 => "RIB_IPV4_MULTICAST",
                4 => "RIB_IPV6_UNICAST",
                5 => "RIB_IPV6_MULTICAST",
                6 => "RIB_GENERIC",
                8 => "RIB_IPV4_UNICAST_ADDPATH",
                9 => "RIB_IPV4_MULTICAST_ADDPATH",
                10 => "RIB_IPV6_UNICAST_ADDPATH",
                11 => "RIB_IPV6_MULTICAST_ADDPATH",
                12 => "RIB_GENERIC_ADDPATH",
                _ => "",
            },
            _ => "",
        };
        if sub.is_empty() {
            format!("{ty}/{}", self.subtype)
        } else {
            format!("{ty}/{sub}")
        }
    }
}

fn parse_ip(r: &mut Reader<'_>, v6: bool) -> Result<IpAddr, crate::wire::reader::Short> {
    Ok(if v6 {
        IpAddr::V6(r.ipv6()?)
    } else {
        IpAddr::V4(r.ipv4()?)
    })
}

fn parse_peers(r: &mut Reader<'_>, as4: bool) -> Result<Bgp4mpPeers, crate::wire::reader::Short> {
    let (peer_as, local_as) = if as4 {
        (r.u32()?, r.u32()?)
    } else {
        (u32::from(r.u16()?), u32::from(r.u16()?))
    };
    let interface_index = r.u16()?;
    let afi = r.u16()?;
    let v6 = afi == AFI_IPV6;
    let peer_ip = parse_ip(r, v6)?;
    let local_ip = parse_ip(r, v6)?;
    Ok(Bgp4mpPeers {
        peer_as,
        local_as,
        interface_index,
        peer_ip,
        local_ip,
    })
}

fn parse_peer_index(r: &mut Reader<'_>) -> Result<PeerIndexTable, &'static str> {
    const T: &str = "peer index table truncated";
    let collector_id = r.ipv4().map_err(|_| T)?;
    let name_len = r.u16().map_err(|_| T)?;
    let view_name =
        String::from_utf8_lossy(r.take(usize::from(name_len)).map_err(|_| T)?).into_owned();
    let count = r.u16().map_err(|_| T)?;
    let mut peers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let ty = r.u8().map_err(|_| T)?;
        let bgp_id = r.ipv4().map_err(|_| T)?;
        let ip = parse_ip(r, ty & 1 != 0).map_err(|_| T)?;
        let asn = if ty & 2 != 0 {
            r.u32().map_err(|_| T)?
        } else {
            u32::from(r.u16().map_err(|_| T)?)
        };
        peers.push(PeerEntry { bgp_id, ip, asn });
    }
    if !r.is_empty() {
        return Err("octets after the peer entries");
    }
    Ok(PeerIndexTable {
        collector_id,
        view_name,
        peers,
    })
}

fn parse_rib(
    r: &mut Reader<'_>,
    family: Option<AfiSafi>,
    add_path: bool,
) -> Result<RibRecord, &'static str> {
    const T: &str = "RIB record truncated";
    let sequence = r.u32().map_err(|_| T)?;
    let (afi_safi, nlri) = match family {
        Some(af) => {
            let len = r.u8().map_err(|_| T)?;
            (af, RibNlri::Prefix(parse_prefix(r, af.afi, len)?))
        }
        None => {
            let afi = r.u16().map_err(|_| T)?;
            let safi = r.u8().map_err(|_| T)?;
            let af = AfiSafi::new(afi, safi);
            // RIB_GENERIC holds one NLRI in its family's own encoding; only the
            // unicast families have an encoding we know the length of.
            if safi == SAFI_UNICAST && (afi == AFI_IPV4 || afi == AFI_IPV6) {
                if add_path {
                    r.u32().map_err(|_| T)?;
                }
                let len = r.u8().map_err(|_| T)?;
                (af, RibNlri::Prefix(parse_prefix(r, afi, len)?))
            } else {
                return Err("RIB_GENERIC for a family whose NLRI length is unknown");
            }
        }
    };
    let count = r.u16().map_err(|_| T)?;
    let mut entries = Vec::with_capacity(usize::from(count).min(4096));
    for _ in 0..count {
        let peer_index = r.u16().map_err(|_| T)?;
        let originated_time = r.u32().map_err(|_| T)?;
        let path_id = if add_path {
            Some(r.u32().map_err(|_| T)?)
        } else {
            None
        };
        let len = r.u16().map_err(|_| T)?;
        let attributes = r.take(usize::from(len)).map_err(|_| T)?.to_vec();
        entries.push(RibEntry {
            peer_index,
            originated_time,
            path_id,
            attributes,
        });
    }
    if !r.is_empty() {
        return Err("octets after the RIB entries");
    }
    Ok(RibRecord {
        sequence,
        afi_safi,
        add_path,
        nlri,
        entries,
    })
}

fn parse_prefix(r: &mut Reader<'_>, afi: u16, len: u8) -> Result<IpNet, &'static str> {
    let bytes = r
        .take(usize::from(len).div_ceil(8))
        .map_err(|_| "prefix truncated")?;
    match afi {
        AFI_IPV4 => {
            let mut o = [0u8; 4];
            o.get_mut(..bytes.len())
                .ok_or("IPv4 prefix longer than 32 bits")?
                .copy_from_slice(bytes);
            Ipv4Net::new(Ipv4Addr::from(o), len)
                .map(IpNet::V4)
                .map_err(|_| "IPv4 prefix longer than 32 bits")
        }
        _ => {
            let mut o = [0u8; 16];
            o.get_mut(..bytes.len())
                .ok_or("IPv6 prefix longer than 128 bits")?
                .copy_from_slice(bytes);
            Ipv6Net::new(Ipv6Addr::from(o), len)
                .map(IpNet::V6)
                .map_err(|_| "IPv6 prefix longer than 128 bits")
        }
    }
}

/// Works out how each recorded session laid out its messages.
///
/// MRT does not record what a session negotiated, yet 4-octet AS and ADD-PATH
/// change how UPDATEs must be read. The tracker watches the OPEN messages in the
/// file and derives the [`WireContext`] for later messages of the same session;
/// before both OPENs are seen it falls back on what the record subtype says.
#[derive(Debug, Default)]
pub struct SessionTracker {
    sessions: HashMap<(IpAddr, IpAddr), SessionOpens>,
}

#[derive(Debug, Default)]
struct SessionOpens {
    /// The OPEN the peer sent.
    peer: Option<Open>,
    /// The OPEN the recording speaker sent.
    local: Option<Open>,
}

impl SessionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an OPEN seen in a message record.
    pub fn observe_open(&mut self, msg: &Bgp4mpMessage, open: &Open) {
        let s = self
            .sessions
            .entry((msg.peers.peer_ip, msg.peers.local_ip))
            .or_default();
        if msg.local {
            s.local = Some(open.clone());
        } else {
            s.peer = Some(open.clone());
        }
    }

    /// Forgets a session's OPENs (on a state change out of Established, a new
    /// session renegotiates).
    pub fn reset(&mut self, peers: &Bgp4mpPeers) {
        self.sessions.remove(&(peers.peer_ip, peers.local_ip));
    }

    /// The context to decode `msg` with: what the session's OPENs negotiated,
    /// or, before any OPEN was seen, what the record subtype suggests.
    pub fn context(&self, msg: &Bgp4mpMessage) -> WireContext {
        let fallback = WireContext {
            four_octet_as: msg.as4_header,
            extended_message: true,
            add_path_ipv4: msg.add_path,
            add_path_ipv6: msg.add_path,
        };
        // With one side's OPEN only (a capture that began mid-handshake), assume
        // the other side offered the same: speakers that record MRT usually do.
        let Some((peer, local)) = self
            .sessions
            .get(&(msg.peers.peer_ip, msg.peers.local_ip))
            .and_then(|s| {
                Some((
                    s.peer.as_ref().or(s.local.as_ref())?,
                    s.local.as_ref().or(s.peer.as_ref())?,
                ))
            })
        else {
            return fallback;
        };
        let (sender, receiver) = if msg.local {
            (local, peer)
        } else {
            (peer, local)
        };
        let negotiated = WireContext::negotiated(sender, receiver);
        // An _ADDPATH subtype says outright that path identifiers are present.
        WireContext {
            add_path_ipv4: negotiated.add_path_ipv4 || msg.add_path,
            add_path_ipv6: negotiated.add_path_ipv6 || msg.add_path,
            ..negotiated
        }
    }
}

/// A BGP4MP message decoded with the context its session most likely used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMessage {
    /// The context the message was decoded with.
    pub context: WireContext,
    /// Whether `context` differs from what the OPENs and subtype suggested,
    /// because the message only decodes cleanly with another one.
    pub guessed: bool,
    /// The outcome.
    pub result: Result<crate::wire::Decoded, crate::wire::WireError>,
}

impl SessionTracker {
    /// Decodes a BGP4MP message and learns from it (OPENs).
    ///
    /// If the message does not decode cleanly with the derived context (a
    /// capture that starts mid-session, or a writer whose subtype misleads),
    /// the other 4-octet-AS / ADD-PATH combinations are tried and the first clean
    /// one is taken, with `guessed` set. If none is clean, the derived context's
    /// result is returned.
    pub fn decode(&mut self, msg: &Bgp4mpMessage) -> SessionMessage {
        use crate::wire::Message;
        let ctx = self.context(msg);
        let first = Message::decode(&msg.message, &ctx);
        let clean =
            |r: &Result<crate::wire::Decoded, _>| r.as_ref().is_ok_and(|d| d.problems.is_empty());
        let mut out = SessionMessage {
            context: ctx,
            guessed: false,
            result: first,
        };
        if !clean(&out.result) {
            let flips = [(true, false), (false, true), (true, true)];
            for (flip_as, flip_ap) in flips {
                let mut alt = ctx;
                if flip_as {
                    alt.four_octet_as = !alt.four_octet_as;
                }
                if flip_ap {
                    alt.add_path_ipv4 = !alt.add_path_ipv4;
                    alt.add_path_ipv6 = !alt.add_path_ipv6;
                }
                let r = Message::decode(&msg.message, &alt);
                if clean(&r) {
                    out = SessionMessage {
                        context: alt,
                        guessed: true,
                        result: r,
                    };
                    break;
                }
            }
        }
        if let Ok(crate::wire::Decoded {
            message: Message::Open(open),
            ..
        }) = &out.result
        {
            self.observe_open(msg, open);
        }
        out
    }
}
