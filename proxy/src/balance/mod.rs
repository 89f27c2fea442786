//! Load balancers (placeholder; being written).
