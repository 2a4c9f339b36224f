//! The streaming framer (RFC 4271 §4.1, §6.1; RFC 8654 §4) as a table of byte streams.

use tabby_bgp::wire::Framer;

fn header(len: u16, ty: u8) -> Vec<u8> {
    let mut h = vec![0xff; 16];
    h.extend_from_slice(&len.to_be_bytes());
    h.push(ty);
    h
}

/// (case, max length, stream, NOTIFICATION code/subcode, data)
type Case = (&'static str, usize, Vec<u8>, (u8, u8), Vec<u8>);

#[test]
fn header_errors_are_reported_as_soon_as_the_header_is_in() {
    let mut bad_marker = header(19, 4);
    bad_marker[0] = 0xfe;
    let cases: Vec<Case> = vec![
        ("marker not all ones", 4096, bad_marker, (1, 1), vec![]),
        ("length 18", 4096, header(18, 4), (1, 2), vec![0, 18]),
        ("length 0", 4096, header(0, 4), (1, 2), vec![0, 0]),
        (
            "length 4097 before extended messages",
            4096,
            header(4097, 2),
            (1, 2),
            vec![0x10, 0x01],
        ),
        (
            "length 65535 before extended messages",
            4096,
            header(65535, 2),
            (1, 2),
            vec![0xff, 0xff],
        ),
    ];
    for (name, max, stream, (code, sub), data) in cases {
        let mut f = Framer::new(max);
        // Feed all but the last header octet: nothing to say yet.
        f.extend(&stream[..18]);
        assert_eq!(f.next_frame(), Ok(None), "{name}: partial header");
        f.extend(&stream[18..]);
        let e = f.next_frame().expect_err(name);
        let n = e.notification();
        assert_eq!(
            (n.code, n.subcode, n.data.clone()),
            (code, sub, data),
            "{name}: {e}"
        );
        // The error sticks: the stream cannot be resynchronised.
        assert!(f.next_frame().is_err(), "{name}: error repeats");
    }
}

#[test]
fn extended_messages_wait_for_their_bytes() {
    let mut f = Framer::new(4096);
    f.set_max_len(65535);
    let mut stream = header(20000, 2);
    f.extend(&stream);
    assert_eq!(
        f.next_frame(),
        Ok(None),
        "a 20000-octet message needs its body first"
    );
    assert_eq!(
        f.buffered(),
        19,
        "nothing is allocated for the announced length"
    );
    stream.resize(20000, 0);
    f.extend(&stream[19..]);
    assert_eq!(f.next_frame().unwrap().unwrap().len(), 20000);
    assert_eq!(f.buffered(), 0);
}

#[test]
fn many_messages_per_read_and_one_message_over_many_reads() {
    let ka = header(19, 4);
    let mut f = Framer::default();
    f.extend(&[ka.clone(), ka.clone(), ka.clone()].concat());
    for _ in 0..3 {
        assert_eq!(&f.next_frame().unwrap().unwrap()[..], &ka[..]);
    }
    assert_eq!(f.next_frame(), Ok(None));
    for b in &ka {
        assert_eq!(f.next_frame(), Ok(None));
        f.extend(&[*b]);
    }
    assert_eq!(&f.next_frame().unwrap().unwrap()[..], &ka[..]);
}
