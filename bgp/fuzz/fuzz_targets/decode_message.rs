//! Decode one message under an arbitrary context (first octet), then check the round-trip
//! properties. The body is `tabby_bgp::wire::fuzzing::decode_any`, also run by
//! `tests/wire_fuzz_smoke.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tabby_bgp::wire::fuzzing::decode_any(data);
});
