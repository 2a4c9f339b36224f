//! Rough timings of the hot IPAM paths, for the record. Ignored by default (timings on a
//! shared CI machine are noise); run with
//! `cargo test -p tabby-api --release --test ipam_timing -- --ignored --nocapture`.

use std::collections::BTreeSet;
use std::time::Instant;

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;
use tabby_api::ipam::block::AllocRequest;
use tabby_api::ipam::carve::{Carver, next_free_block};
use tabby_api::ipam::name::block_name;
use tabby_api::ipam::node::{self, Scope};
use tabby_api::ipam::pool::Pool;
use tabby_api::ipam::{Family, IpamConfig};
use tabby_api::v1alpha1::{IPAMBlock, IPAMBlockSpec};

#[test]
#[ignore = "timing, not a check; run by hand"]
fn timings() {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let cfg = IpamConfig::default();
    // A node with 20 /26 blocks; fill all 1280 addresses, then release them all.
    let mut blocks: Vec<IPAMBlock> = (0..20u32)
        .map(|i| {
            let cidr: IpNet = format!("10.0.{}.{}/26", i / 4, (i % 4) * 64)
                .parse()
                .unwrap();
            IPAMBlock::new(
                &block_name(cidr),
                IPAMBlockSpec {
                    cidr: cidr.to_string(),
                    pool: "p".into(),
                    node: "n1".into(),
                },
            )
        })
        .collect();
    let scope = Scope {
        node: "n1",
        family: Family::V4,
        pool: None,
    };
    let draining = BTreeSet::new();
    let n = 1280;
    let start = Instant::now();
    for i in 0..n {
        let req = AllocRequest {
            handle: format!("h{i}"),
            pod: None,
            address: None,
        };
        node::allocate(&mut blocks, scope, &draining, &req, now, &cfg).unwrap();
    }
    let alloc = start.elapsed() / n;
    let start = Instant::now();
    for i in 0..n {
        node::release(&mut blocks, "n1", &format!("h{i}"), now);
    }
    let release = start.elapsed() / n;
    // Carving in a pool that already has 5,000 blocks.
    let pool = Pool::new("p", "10.0.0.0/8".parse().unwrap(), 26);
    let mut existing = Vec::new();
    let start = Instant::now();
    for i in 0..5000 {
        existing.push(next_free_block(&pool, &format!("node-{i}"), &existing).unwrap());
    }
    let carve = start.elapsed() / 5000;
    let mut carver = Carver::new(&pool, &[]);
    let start = Instant::now();
    for i in 0..5000 {
        carver.take(&format!("node-{i}")).unwrap();
    }
    let bulk = start.elapsed() / 5000;
    eprintln!(
        "node allocate (20 blocks, 1280 addresses): {alloc:?}/op; release: {release:?}/op; \
         next_free_block (up to 5,000 existing blocks): {carve:?}/op; Carver::take: {bulk:?}/op"
    );
}
