//! Packet-capture reading and TCP stream reassembly.
