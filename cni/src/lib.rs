//! CNI protocol types and the tabby-cni shim.
