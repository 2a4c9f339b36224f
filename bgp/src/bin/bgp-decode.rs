//! `bgp-decode`: prints every BGP message in a packet capture or a hex dump as one JSON object
//! per line. See `bgp-decode --help`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use tabby_bgp::capture::messages::{Decoded, Origin, Record, decode_bytes, decode_streams};
use tabby_bgp::capture::{Frame, read_capture, reassemble};
use tabby_bgp::wire::{DecodeContext, Family};

const ABOUT: &str = "Decode every BGP message in a packet capture (pcap or pcapng) or a hex dump.";

const LONG_ABOUT: &str = "\
Decode every BGP message in a packet capture (pcap or pcapng) or a hex dump.

Each TCP direction on the BGP port is reassembled in sequence order (retransmissions are \
dropped, reordering is undone, holes are reported), split into messages, and decoded with \
what that session negotiated: 4-octet AS numbers, ADD-PATH and extended messages come from \
the two OPENs of the connection. If only the sender's OPEN was captured, the receiver is \
assumed to have agreed to its 4-octet AS and extended-message capabilities. When the capture \
starts mid-session there are no OPENs; say what was negotiated with --as4, --add-path and \
--extended-message (a wrong guess shows up as malformed AS_PATHs or NLRI).

Output: one JSON object per message on stdout (--pretty to indent), in the order a receiver \
would have read them. Fields: frame (the frame that completed the message), frames (all frames \
that carried it, when more than one), time (UTC, of that frame), flow (\"src -> dst\"), \
connection (shared by both directions of a TCP connection), type, length, context (negotiated, \
from the sender's OPEN only, assumed, or not needed), decoded (the message), and on failure \
error (in words), notification (the code/subcode a speaker would send) and hex. With --hex \
input, message and offset replace the capture fields. A summary per flow, lost or skipped \
bytes, and every failure with its frame go to stderr.

Link types: Ethernet (with VLAN tags), Linux cooked SLL and SLL2 (tcpdump -i any), raw IPv4/IPv6, \
BSD loopback (NULL, LOOP). IPv4 and IPv6.

Exit status: 0 every message decoded; 1 at least one message failed to decode (the frame and \
the reason are printed); 2 the input could not be read.";

const EXAMPLES: &str = "\
Examples:
  tcpdump -i any -w bgp.pcap port 179        # capture (SLL2)
  bgp-decode bgp.pcap                        # one JSON line per message
  bgp-decode bgp.pcap | jq 'select(.type==\"UPDATE\")'
  bgp-decode --pretty --as4 --add-path ipv4 midsession.pcapng
  echo 'ffffffff ffffffff ffffffff ffffffff 0013 04' | bgp-decode --hex -";

#[derive(Debug, Parser)]
#[command(name = "bgp-decode", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Args {
    /// A pcap or pcapng file (`-` reads stdin).
    #[arg(
        value_name = "CAPTURE",
        required_unless_present = "hex",
        conflicts_with = "hex"
    )]
    capture: Option<PathBuf>,

    /// Read a hex dump of one or more whole messages (header included) instead of a capture.
    /// Bytes may be separated by spaces, newlines, colons or commas; `0x` prefixes are fine.
    /// `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    hex: Option<PathBuf>,

    /// TCP port that identifies BGP traffic (either side).
    #[arg(long, default_value_t = 179)]
    port: u16,

    /// Assume 4-octet AS numbers (RFC 6793) where no OPEN exchange was seen.
    #[arg(long)]
    as4: bool,

    /// Assume ADD-PATH path identifiers (RFC 7911) for these families where no OPEN exchange
    /// was seen: comma-separated `ipv4`, `ipv6`.
    #[arg(long, value_delimiter = ',', value_name = "FAMILIES")]
    add_path: Vec<String>,

    /// Assume extended messages (RFC 8654, up to 65535 bytes) where no OPEN exchange was seen.
    #[arg(long)]
    extended_message: bool,

    /// Assume the session is iBGP where no OPEN exchange was seen.
    #[arg(long)]
    ibgp: bool,

    /// Indent the JSON (one object per message, several lines each).
    #[arg(long)]
    pretty: bool,

    /// Include each message's raw bytes as hex in the output.
    #[arg(long)]
    raw: bool,
}

fn fallback_context(args: &Args) -> anyhow::Result<DecodeContext> {
    let mut add_path_rx = BTreeSet::new();
    for f in &args.add_path {
        match f.trim().to_ascii_lowercase().as_str() {
            "ipv4" | "ipv4-unicast" => add_path_rx.insert(Family::IPV4_UNICAST),
            "ipv6" | "ipv6-unicast" => add_path_rx.insert(Family::IPV6_UNICAST),
            other => bail!("--add-path: unknown family {other:?} (use ipv4, ipv6)"),
        };
    }
    Ok(DecodeContext {
        four_octet_as: args.as4,
        extended_message: args.extended_message,
        add_path_rx,
        ibgp: args.ibgp,
        peer_as: None,
    })
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .context("reading stdin")?;
        Ok(v)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// Parses a hex dump: hex digit pairs, separated or not by whitespace, `:`, `,` or `-`, each
/// group optionally prefixed with `0x`.
fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut digits = String::with_capacity(text.len());
    for (lineno, line) in text.lines().enumerate() {
        for group in line.split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '-')) {
            let g = group
                .strip_prefix("0x")
                .or_else(|| group.strip_prefix("0X"))
                .unwrap_or(group);
            if let Some(bad) = g.chars().find(|c| !c.is_ascii_hexdigit()) {
                bail!(
                    "hex input line {}: {bad:?} in {group:?} is not a hex digit",
                    lineno + 1
                );
            }
            digits.push_str(g);
        }
    }
    if !digits.len().is_multiple_of(2) {
        bail!(
            "hex input has an odd number of digits ({}): a byte is cut in half",
            digits.len()
        );
    }
    hex::decode(&digits).context("hex input")
}

fn timestamp(frame: Option<&Frame>) -> Value {
    let Some(d) = frame.and_then(|f| f.timestamp) else {
        return Value::Null;
    };
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    match jiff::Timestamp::new(secs, d.subsec_nanos() as i32) {
        Ok(t) => Value::String(t.to_string()),
        Err(_) => json!(d.as_secs_f64()),
    }
}

fn record_json(r: &Record, frames: &[Frame], raw: bool) -> Value {
    let mut o = serde_json::Map::new();
    match &r.origin {
        Origin::Capture {
            frames: fs,
            flow,
            connection,
            ..
        } => {
            o.insert("frame".into(), json!(r.completed_in_frame));
            if fs.len() > 1 || fs.first().copied() != r.completed_in_frame {
                o.insert("frames".into(), json!(fs));
            }
            let at = r
                .completed_in_frame
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| frames.get(n.wrapping_sub(1)));
            o.insert("time".into(), timestamp(at));
            o.insert("flow".into(), json!(flow.to_string()));
            o.insert("connection".into(), json!(connection));
        }
        Origin::Hex { index, offset } => {
            o.insert("message".into(), json!(index));
            o.insert("offset".into(), json!(offset));
        }
    }
    o.insert("type".into(), json!(r.type_name()));
    o.insert("length".into(), json!(r.bytes.len()));
    o.insert("context".into(), json!(r.negotiated.describe()));
    match &r.result {
        Ok(m) => {
            let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
            // The message's own "type" tag duplicates the one above.
            if let Some(obj) = v.as_object_mut() {
                obj.remove("type");
            }
            o.insert("decoded".into(), v);
            if let Some(f) = r.failure() {
                o.insert("error".into(), json!(f));
            }
        }
        Err(e) => {
            o.insert("error".into(), json!(e.to_string()));
            o.insert(
                "notification".into(),
                serde_json::to_value(e).unwrap_or(Value::Null),
            );
        }
    }
    if raw || r.failure().is_some() {
        o.insert("hex".into(), json!(hex::encode(&r.bytes)));
    }
    Value::Object(o)
}

fn summary(decoded: &Decoded) -> String {
    let mut per_flow: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &decoded.records {
        let key = match &r.origin {
            Origin::Capture { flow, .. } => flow.to_string(),
            Origin::Hex { .. } => "hex input".to_string(),
        };
        *per_flow
            .entry(key)
            .or_default()
            .entry(r.type_name())
            .or_default() += 1;
    }
    let mut s = String::new();
    for (flow, counts) in &per_flow {
        let total: usize = counts.values().sum();
        let parts: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
        s.push_str(&format!(
            "{flow}: {total} messages ({})\n",
            parts.join(", ")
        ));
    }
    if per_flow.is_empty() {
        s.push_str("no BGP messages found\n");
    }
    s
}

fn run(args: &Args) -> anyhow::Result<(Decoded, Vec<Frame>, Vec<String>)> {
    let fallback = fallback_context(args)?;
    if let Some(path) = &args.hex {
        let bytes = read_input(path)?;
        let text = String::from_utf8(bytes).context("hex input is not text")?;
        let data = parse_hex(&text)?;
        if data.is_empty() {
            bail!("hex input holds no bytes");
        }
        return Ok((decode_bytes(&data, &fallback), Vec::new(), Vec::new()));
    }
    let Some(path) = &args.capture else {
        bail!("give a capture file or --hex FILE");
    };
    let bytes = read_input(path)?;
    let file =
        read_capture(&bytes).with_context(|| format!("reading capture {}", path.display()))?;
    let port = args.port;
    let streams = reassemble(&file.frames, |s| {
        s.src.port() == port || s.dst.port() == port
    });
    let decoded = decode_streams(&streams, &fallback);
    Ok((decoded, file.frames, file.warnings))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (decoded, frames, warnings) = match run(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bgp-decode: {e:#}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in &decoded.records {
        let v = record_json(r, &frames, args.raw);
        let text = if args.pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        };
        if let Ok(t) = text
            && writeln!(out, "{t}").is_err()
        {
            // Reader went away (e.g. `| head`): stop quietly.
            return ExitCode::SUCCESS;
        }
    }
    let _ = out.flush();

    let mut err = summary(&decoded);
    for w in &warnings {
        err.push_str(&format!("warning: {w}\n"));
    }
    // A damaged capture can produce thousands of warnings; the first ones locate the trouble.
    const MAX_WARNINGS: usize = 25;
    if decoded.issues.len() > MAX_WARNINGS {
        err.push_str(&format!(
            "warning: {} stream warnings; the first {MAX_WARNINGS}:\n",
            decoded.issues.len()
        ));
    }
    for i in decoded.issues.iter().take(MAX_WARNINGS) {
        let place = match (i.frame, i.flow) {
            (Some(f), Some(flow)) => format!("frame {f} ({flow}): "),
            (Some(f), None) => format!("frame {f}: "),
            (None, Some(flow)) => format!("{flow}: "),
            (None, None) => String::new(),
        };
        err.push_str(&format!("warning: {place}{}\n", i.what));
    }
    let failures: Vec<_> = decoded.failures().collect();
    for (r, why) in &failures {
        let flow = match &r.origin {
            Origin::Capture { flow, .. } => format!(" ({flow})"),
            Origin::Hex { .. } => String::new(),
        };
        err.push_str(&format!(
            "error: {}{flow}: {} failed to decode: {why}\n",
            r.origin.describe(),
            r.type_name()
        ));
    }
    eprint!("{err}");
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "bgp-decode: {} of {} messages failed to decode",
            failures.len(),
            decoded.records.len()
        );
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        let want = vec![0xff, 0x00, 0x13, 0x04];
        for text in [
            "ff 00 13 04",
            "ff0013 04\n",
            "0xff,0x00,0x13,0x04",
            "ff:00:13:04",
            "FF-00-13-04",
            "  ff0013\n\n04  ",
        ] {
            assert_eq!(parse_hex(text).unwrap(), want, "{text:?}");
        }
        assert!(parse_hex("ff 0").unwrap_err().to_string().contains("odd"));
        let e = parse_hex("ff\nzz").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("'z'"), "{e}");
    }

    #[test]
    fn add_path_families() {
        let a = Args::parse_from(["bgp-decode", "--add-path", "ipv4,IPv6", "x.pcap"]);
        let cx = fallback_context(&a).unwrap();
        assert!(cx.add_path(Family::IPV4_UNICAST) && cx.add_path(Family::IPV6_UNICAST));
        let a = Args::parse_from(["bgp-decode", "--add-path", "l2vpn", "x.pcap"]);
        assert!(fallback_context(&a).is_err());
    }
}
