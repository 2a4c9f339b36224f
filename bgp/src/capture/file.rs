//! Capture files: classic pcap (both byte orders, micro- and nanosecond) and pcapng (any number of
//! sections and interfaces, each interface with its own link type and timestamp resolution).
//!
//! Owns turning a file's bytes into numbered [`Frame`]s. It does not look inside the frames; that is
//! [`super::packet`]'s job.

use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError, TsResolution};

/// Link-layer header type of a frame (the LINKTYPE_* registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte address family in the capturing host's byte order.
    Null,
    /// LINKTYPE_ETHERNET (1), possibly with 802.1Q / 802.1ad tags.
    Ethernet,
    /// LINKTYPE_RAW (101): bare IPv4 or IPv6.
    Raw,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, address family in network byte order.
    Loop,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2, what `tcpdump -i any` writes.
    LinuxSll2,
    /// Anything else, by its LINKTYPE number.
    Other(u32),
}

impl LinkType {
    /// The LINKTYPE number.
    pub fn number(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
            LinkType::Other(n) => n,
        }
    }

    /// The link type for a LINKTYPE number.
    pub fn from_number(n: u32) -> LinkType {
        match n {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            n => LinkType::Other(n),
        }
    }
}

impl From<DataLink> for LinkType {
    fn from(d: DataLink) -> LinkType {
        LinkType::from_number(u32::from(d))
    }
}

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 1-based position among the file's packet records, as Wireshark numbers them.
    pub number: u64,
    /// Time since the Unix epoch, when the format records one (pcapng simple packets do not).
    pub timestamp: Option<Duration>,
    pub link: LinkType,
    /// The captured bytes (possibly shorter than `original_len` if the snap length cut them).
    pub data: Vec<u8>,
    pub original_len: u32,
}

/// Which container format the file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// A capture file's frames, plus anything odd noticed while reading it.
#[derive(Debug, Clone)]
pub struct CaptureFile {
    pub format: Format,
    pub frames: Vec<Frame>,
    /// Non-fatal problems (a truncated last record, a packet for an undeclared interface).
    pub warnings: Vec<String>,
}

/// Why a capture file could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file (magic {magic:02x?})")]
    UnknownFormat { magic: Vec<u8> },
    #[error("bad {format:?} file header: {source}")]
    Header {
        format: Format,
        #[source]
        source: PcapError,
    },
    #[error("bad {format:?} record after frame {after_frame} (byte offset {offset}): {source}")]
    Record {
        format: Format,
        after_frame: u64,
        offset: usize,
        #[source]
        source: PcapError,
    },
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x4d, 0x3c, 0xb2, 0xa1],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads a whole capture file held in memory. The format is detected from its magic number.
pub fn read_capture(bytes: &[u8]) -> Result<CaptureFile, CaptureError> {
    let magic: [u8; 4] = match bytes.get(..4).and_then(|m| <[u8; 4]>::try_from(m).ok()) {
        Some(m) => m,
        None => {
            return Err(CaptureError::UnknownFormat {
                magic: bytes.to_vec(),
            });
        }
    };
    if PCAP_MAGICS.contains(&magic) {
        read_pcap(bytes)
    } else if magic == PCAPNG_MAGIC {
        read_pcapng(bytes)
    } else {
        Err(CaptureError::UnknownFormat {
            magic: magic.to_vec(),
        })
    }
}

fn read_pcap(bytes: &[u8]) -> Result<CaptureFile, CaptureError> {
    let format = Format::Pcap;
    let (mut rest, parser) =
        PcapParser::new(bytes).map_err(|source| CaptureError::Header { format, source })?;
    let header = parser.header();
    let link = LinkType::from(header.datalink);
    let mut out = CaptureFile {
        format,
        frames: Vec::new(),
        warnings: Vec::new(),
    };
    while !rest.is_empty() {
        // Raw records: pcap-file's validated path rejects records whose original length exceeds
        // the snap length, which real tools write (e.g. offloaded super-frames); we only need the
        // captured bytes.
        match parser.next_raw_packet(rest) {
            Ok((next, raw)) => {
                let frac = match header.ts_resolution {
                    TsResolution::MicroSecond => u64::from(raw.ts_frac) * 1_000,
                    TsResolution::NanoSecond => u64::from(raw.ts_frac),
                };
                let timestamp =
                    Duration::from_secs(u64::from(raw.ts_sec)) + Duration::from_nanos(frac);
                out.frames.push(Frame {
                    number: out.frames.len() as u64 + 1,
                    timestamp: Some(timestamp),
                    link,
                    data: raw.data.into_owned(),
                    original_len: raw.orig_len,
                });
                rest = next;
            }
            Err(PcapError::IncompleteBuffer) => {
                out.warnings.push(format!(
                    "file ends in the middle of a record after frame {} ({} trailing bytes ignored)",
                    out.frames.len(),
                    rest.len()
                ));
                break;
            }
            Err(source) => {
                return Err(CaptureError::Record {
                    format,
                    after_frame: out.frames.len() as u64,
                    offset: bytes.len() - rest.len(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Timestamp units of one pcapng interface: `if_tsresol` (default 10^-6 s) and `if_tsoffset`.
#[derive(Debug, Clone, Copy)]
struct TsUnits {
    resol: u8,
    offset_secs: u64,
}

impl TsUnits {
    /// Converts a raw 64-bit pcapng timestamp into time since the epoch. `None` if the units make
    /// no sense (a resolution finer than 2^-63 or 10^-19 cannot be represented).
    fn to_duration(self, raw: u64) -> Option<Duration> {
        let since = if self.resol & 0x80 == 0 {
            // Negative power of ten.
            let per_sec = 10u64.checked_pow(u32::from(self.resol))?;
            let secs = raw / per_sec;
            let rem = u128::from(raw % per_sec);
            let nanos = rem * 1_000_000_000 / u128::from(per_sec);
            Duration::new(secs, u32::try_from(nanos).ok()?)
        } else {
            // Negative power of two.
            let shift = u32::from(self.resol & 0x7f);
            if shift > 63 {
                return None;
            }
            let per_sec = 1u64 << shift;
            let secs = raw >> shift;
            let rem = u128::from(raw & (per_sec - 1));
            let nanos = rem * 1_000_000_000 / u128::from(per_sec);
            Duration::new(secs, u32::try_from(nanos).ok()?)
        };
        since.checked_add(Duration::from_secs(self.offset_secs))
    }
}

fn interface_units(options: &[InterfaceDescriptionOption<'_>]) -> TsUnits {
    let mut units = TsUnits {
        resol: 6,
        offset_secs: 0,
    };
    for opt in options {
        match opt {
            InterfaceDescriptionOption::IfTsResol(r) => units.resol = *r,
            InterfaceDescriptionOption::IfTsOffset(o) => units.offset_secs = *o,
            _ => {}
        }
    }
    units
}

fn read_pcapng(bytes: &[u8]) -> Result<CaptureFile, CaptureError> {
    let format = Format::PcapNg;
    let (mut rest, mut parser) =
        PcapNgParser::new(bytes).map_err(|source| CaptureError::Header { format, source })?;
    let mut out = CaptureFile {
        format,
        frames: Vec::new(),
        warnings: Vec::new(),
    };
    while !rest.is_empty() {
        let (next, block) = match parser.next_block(rest) {
            Ok(v) => v,
            Err(PcapError::IncompleteBuffer) => {
                out.warnings.push(format!(
                    "file ends in the middle of a block after frame {} ({} trailing bytes ignored)",
                    out.frames.len(),
                    rest.len()
                ));
                break;
            }
            Err(source) => {
                return Err(CaptureError::Record {
                    format,
                    after_frame: out.frames.len() as u64,
                    offset: bytes.len() - rest.len(),
                    source,
                });
            }
        };
        rest = next;
        // (interface id, raw timestamp, data, original length)
        let (iface, raw_ts, data, original_len) = match block {
            Block::EnhancedPacket(epb) => {
                // pcap-file 2.0 stores the raw 64-bit timestamp as if it were nanoseconds; the
                // interface's if_tsresol says what the unit really is, so take the raw count back.
                let raw = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                (epb.interface_id, Some(raw), epb.data, epb.original_len)
            }
            Block::Packet(pb) => (
                u32::from(pb.interface_id),
                Some(pb.timestamp),
                pb.data,
                pb.original_len,
            ),
            // RFC pcapng §4.4: a simple packet belongs to the first interface and has no time.
            Block::SimplePacket(spb) => (0, None, spb.data, spb.original_len),
            _ => continue,
        };
        let number = out.frames.len() as u64 + 1;
        let (link, units) = match parser.interfaces().get(iface as usize) {
            Some(idb) => (LinkType::from(idb.linktype), interface_units(&idb.options)),
            None => {
                out.warnings.push(format!(
                    "frame {number}: interface {iface} was never described; frame kept with an unknown link type"
                ));
                (
                    LinkType::Other(u32::MAX),
                    TsUnits {
                        resol: 6,
                        offset_secs: 0,
                    },
                )
            }
        };
        let timestamp = raw_ts.and_then(|raw| units.to_duration(raw));
        out.frames.push(Frame {
            number,
            timestamp,
            link,
            data: data.into_owned(),
            original_len,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::{Endianness, TsResolution};
    use std::borrow::Cow;

    fn pcap_bytes(endianness: Endianness, ts_resolution: TsResolution) -> Vec<u8> {
        let header = PcapHeader {
            datalink: DataLink::LINUX_SLL2,
            endianness,
            ts_resolution,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
        for i in 0..3u8 {
            let data = vec![i; 10 + usize::from(i)];
            let p = PcapPacket::new(Duration::new(1_700_000_000, 123_456_000), 60, &data);
            w.write_packet(&p).unwrap();
        }
        w.into_writer()
    }

    #[test]
    fn classic_pcap_all_byte_orders_and_resolutions() {
        for e in [Endianness::Big, Endianness::Little] {
            for r in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
                let f = read_capture(&pcap_bytes(e, r)).unwrap();
                assert_eq!(f.format, Format::Pcap);
                assert_eq!(f.frames.len(), 3, "{e:?} {r:?}");
                assert!(f.warnings.is_empty());
                for (i, fr) in f.frames.iter().enumerate() {
                    assert_eq!(fr.number, i as u64 + 1);
                    assert_eq!(fr.link, LinkType::LinuxSll2);
                    assert_eq!(fr.data, vec![i as u8; 10 + i]);
                    assert_eq!(fr.original_len, 60);
                    assert_eq!(
                        fr.timestamp,
                        Some(Duration::new(1_700_000_000, 123_456_000))
                    );
                }
            }
        }
    }

    #[test]
    fn truncated_last_record_is_a_warning_not_an_error() {
        let mut b = pcap_bytes(Endianness::Little, TsResolution::MicroSecond);
        b.truncate(b.len() - 3);
        let f = read_capture(&b).unwrap();
        assert_eq!(f.frames.len(), 2);
        assert_eq!(f.warnings.len(), 1);
        assert!(f.warnings[0].contains("after frame 2"), "{}", f.warnings[0]);
    }

    #[test]
    fn unknown_magic_and_short_files_are_errors() {
        assert!(matches!(
            read_capture(b"GET / HTTP/1.1"),
            Err(CaptureError::UnknownFormat { .. })
        ));
        assert!(matches!(
            read_capture(b"\xa1\xb2"),
            Err(CaptureError::UnknownFormat { .. })
        ));
        // Right magic, header cut short.
        assert!(matches!(
            read_capture(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]),
            Err(CaptureError::Header { .. })
        ));
    }

    fn idb(link: DataLink, tsresol: Option<u8>) -> InterfaceDescriptionBlock<'static> {
        let mut b = InterfaceDescriptionBlock::new(link, 65535);
        if let Some(r) = tsresol {
            b.options.push(InterfaceDescriptionOption::IfTsResol(r));
        }
        b
    }

    fn epb(iface: u32, raw_ts: u64, data: &[u8]) -> EnhancedPacketBlock<'static> {
        EnhancedPacketBlock {
            interface_id: iface,
            // pcap-file writes `as_nanos()` as the raw count (see read_pcapng).
            timestamp: Duration::from_nanos(raw_ts),
            original_len: data.len() as u32,
            data: Cow::Owned(data.to_vec()),
            options: vec![],
        }
    }

    #[test]
    fn pcapng_several_interfaces_with_own_link_types_and_resolutions() {
        for e in [Endianness::Big, Endianness::Little] {
            let section = pcap_file::pcapng::blocks::section_header::SectionHeaderBlock {
                endianness: e,
                ..Default::default()
            };
            let mut w = PcapNgWriter::with_section_header(Vec::new(), section).unwrap();
            w.write_pcapng_block(idb(DataLink::ETHERNET, None)).unwrap();
            w.write_pcapng_block(idb(DataLink::LINUX_SLL2, Some(9)))
                .unwrap();
            // 2^-10 s units.
            w.write_pcapng_block(idb(DataLink::RAW, Some(0x80 | 10)))
                .unwrap();
            w.write_pcapng_block(epb(0, 1_700_000_000_250_000, b"eth"))
                .unwrap();
            w.write_pcapng_block(epb(1, 1_700_000_000_000_000_007, b"sll2"))
                .unwrap();
            w.write_pcapng_block(epb(2, (5 << 10) + 512, b"raw"))
                .unwrap();
            let f = read_capture(w.get_ref()).unwrap();
            assert_eq!(f.format, Format::PcapNg);
            assert!(f.warnings.is_empty(), "{:?}", f.warnings);
            let got: Vec<_> = f
                .frames
                .iter()
                .map(|fr| (fr.number, fr.link, fr.data.clone(), fr.timestamp))
                .collect();
            assert_eq!(
                got,
                vec![
                    (
                        1,
                        LinkType::Ethernet,
                        b"eth".to_vec(),
                        Some(Duration::new(1_700_000_000, 250_000_000))
                    ),
                    (
                        2,
                        LinkType::LinuxSll2,
                        b"sll2".to_vec(),
                        Some(Duration::new(1_700_000_000, 7))
                    ),
                    (
                        3,
                        LinkType::Raw,
                        b"raw".to_vec(),
                        Some(Duration::new(5, 500_000_000))
                    ),
                ],
                "{e:?}"
            );
        }
    }

    #[test]
    fn pcapng_packet_for_undeclared_interface_is_kept_with_a_warning() {
        let section = pcap_file::pcapng::blocks::section_header::SectionHeaderBlock {
            endianness: Endianness::Little,
            ..Default::default()
        };
        let mut w = PcapNgWriter::with_section_header(Vec::new(), section).unwrap();
        w.write_pcapng_block(idb(DataLink::ETHERNET, None)).unwrap();
        w.write_pcapng_block(epb(0, 0, b"x")).unwrap();
        let mut bytes = w.into_inner();
        // The writer refuses undeclared interfaces, so patch the EPB's interface id (the EPB is
        // the last 36 bytes: type, length, interface id, ...).
        let at = bytes.len() - 36 + 8;
        bytes[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
        let f = read_capture(&bytes).unwrap();
        assert_eq!(f.frames.len(), 1);
        assert_eq!(f.frames[0].link, LinkType::Other(u32::MAX));
        assert!(f.warnings[0].contains("interface 3"), "{:?}", f.warnings);
    }

    #[test]
    fn link_type_numbers_round_trip() {
        for n in [0, 1, 101, 108, 113, 228, 229, 276, 147] {
            assert_eq!(LinkType::from_number(n).number(), n);
        }
    }
}
