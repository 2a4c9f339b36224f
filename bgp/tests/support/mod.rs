//! Set-up shared by tabby-bgp's integration tests (and the RIB bench, through `#[path]`): a
//! heap-counting allocator for the memory tests, RIB/UPDATE builders, and in-process speaker
//! helpers. It holds scaffolding: the behaviour each test checks stays in the test (the
//! one check here is the wire round trip's, that every encoded UPDATE fits and decodes). Each test binary declares `mod support;` and uses
//! what it needs; not every binary uses every helper.
#![allow(dead_code)]

pub mod alloc;
pub mod rib;
pub mod speaker;
