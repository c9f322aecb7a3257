//! The Messages request's prompt pieces as the cursor walks them against the tree's: every valid
//! request written plainly is walked, and wherever the walk answers — on requests and
//! arbitrary JSON, as written and with an edit tried at every place — it reads what the tree
//! reads (labels, texts, fingerprints).

use proptest::prelude::*;
use serde_json::Value;

use super::super::proptests::{KEYS, MEMBER_EDITS, valid};
use super::{by_tree, walked};
use crate::gateway::pieces::same_walk_as_tree;
use crate::proptest_support::{every_edit, json, style, write, write_plain_names};

/// Where the walk answers for `text`, the tree reads the same pieces.
fn walked_as_tree(text: &str) -> Result<(), TestCaseError> {
    same_walk_as_tree(text, walked, by_tree).map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every valid request is walked (so the test below compares something), whatever its
    /// style of writing: escaped names too (a body the tree read had its strings fingerprinted
    /// otherwise, found by an independent re-check).
    #[test]
    fn valid_requests_are_walked(a in valid(), st in style(), plain in any::<bool>()) {
        let body = Value::Object(a.body);
        let text = if plain { write_plain_names(&body, &st) } else { write(&body, &st) };
        prop_assert!(walked(&text).is_some(), "{}", text);
    }

    /// Wherever the walk answers, it reads the tree's pieces.
    #[test]
    fn the_walk_reads_the_trees_pieces(
        body in prop_oneof![3 => valid().prop_map(|a| Value::Object(a.body)), 1 => json(KEYS)],
        st in style(),
        plain in any::<bool>(),
        at in any::<prop::sample::Index>(),
        cut in prop_oneof![2 => Just(0usize), 1 => 1usize..4],
    ) {
        let text = if plain { write_plain_names(&body, &st) } else { write(&body, &st) };
        every_edit(&text, at, cut, MEMBER_EDITS, walked_as_tree)?;
    }
}
