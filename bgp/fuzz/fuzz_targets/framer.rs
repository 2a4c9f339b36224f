//! Feed a byte stream to the framer in chunks; check it frames exactly as a one-shot split
//! would. The body is `tabby_bgp::wire::fuzzing::frame_any`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tabby_bgp::wire::fuzzing::frame_any(data);
});
