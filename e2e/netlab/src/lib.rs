//! Network-namespace test lab: namespaces, veths and real routing daemons.
