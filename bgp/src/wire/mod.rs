//! BGP-4 wire codec.
