//! The registry's reconcile hashcode, as Netflix's `Applications.getReconcileHashCode`
//! computes it: every instance of every application counted by its `status`
//! (not its overridden status), statuses in name order, each written
//! `STATUS_count_`: `DOWN_1_OUT_OF_SERVICE_1_UP_3_`. An empty registry gives `""`.

use std::collections::BTreeMap;

use crate::decode::Status;

/// The hashcode of a registry holding instances with these statuses.
pub fn reconcile_hashcode<'a>(statuses: impl IntoIterator<Item = &'a Status>) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in statuses {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, n)| format!("{status}_{n}_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_status_in_name_order() {
        use Status::*;
        assert_eq!(reconcile_hashcode(&[]), "");
        assert_eq!(reconcile_hashcode(&[Up]), "UP_1_");
        // The example Steeltoe's ApplicationInfoCollectionTest asserts.
        let all = [Up, Down, OutOfService, Starting, Down];
        assert_eq!(
            reconcile_hashcode(&all),
            "DOWN_2_OUT_OF_SERVICE_1_STARTING_1_UP_1_"
        );
        assert_eq!(reconcile_hashcode(&[Up, Up, Up, Down]), "DOWN_1_UP_3_");
        assert_eq!(reconcile_hashcode(&[Unknown, Up]), "UNKNOWN_1_UP_1_");
    }
}
