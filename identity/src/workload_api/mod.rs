//! Credentials from the SPIFFE Workload API (a SPIRE agent's Unix socket).
