//! Node address autodetection against a real namespace's interfaces and routes (root only).

use tabby_agent::addr::{Family, netlink::autodetect, parse_method};
use tabby_netlab::{Netns, in_netns, skip_unless_root_and};

#[test]
fn every_method_in_a_namespace() {
    if skip_unless_root_and(&["ip"]) {
        return;
    }
    let node = Netns::new().unwrap();
    let other = Netns::new().unwrap();
    node.veth_to("eth0", &other, "p0").unwrap();
    node.veth_to("eth1", &other, "p1").unwrap();
    node.veth_to("veth9", &other, "p9").unwrap();
    node.add_addr("eth0", "10.0.0.5/24").unwrap();
    node.add_addr("eth0", "2001:db8::5/64").unwrap();
    node.add_addr("eth1", "192.168.50.10/24").unwrap();
    node.add_addr("veth9", "10.99.0.1/30").unwrap();
    node.ip(&["route", "add", "172.16.0.0/12", "via", "192.168.50.1"])
        .unwrap();
    node.ip(&["-6", "route", "add", "default", "via", "2001:db8::1"])
        .unwrap();

    let cases: &[(&str, Family, Result<&str, &str>)] = &[
        ("first-found", Family::V4, Ok("10.0.0.5/24")),
        ("first-found", Family::V6, Ok("2001:db8::5/64")),
        ("interface=eth1", Family::V4, Ok("192.168.50.10/24")),
        ("skip-interface=eth0", Family::V4, Ok("192.168.50.10/24")),
        ("cidr=192.168.0.0/16", Family::V4, Ok("192.168.50.10/24")),
        ("can-reach=172.20.1.1", Family::V4, Ok("192.168.50.10/24")),
        ("can-reach=10.0.0.77", Family::V4, Ok("10.0.0.5/24")),
        ("can-reach=2001:4860::1", Family::V6, Ok("2001:db8::5/64")),
        ("can-reach=8.8.8.8", Family::V4, Err("no route to 8.8.8.8")),
        (
            "interface=wlan0",
            Family::V4,
            Err("no interface name matches"),
        ),
    ];
    in_netns(&node, || {
        for (method, family, want) in cases {
            let m = parse_method(method).unwrap();
            let got = autodetect(&m, *family)
                .map(|n| n.to_string())
                .map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{method}"),
                (Err(w), Err(g)) => assert!(g.contains(w) && g.contains(method), "{method}: {g}"),
                _ => panic!("{method}: want {want:?}, got {got:?}"),
            }
        }
    })
    .unwrap();
}
