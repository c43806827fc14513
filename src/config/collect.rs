//! Deserialising the configuration table while collecting every type error.
//!
//! serde stops at the first error. To list them all, the table is
//! deserialised, the value the error points at is removed, and the process
//! repeats until it succeeds or nothing more can be removed. A removed value
//! falls back to its default; a removed required value is reported missing
//! once, then its enclosing table is removed too. Every round removes a value,
//! so the number of rounds is bounded by the size of the table.
//!
//! Removing an element of an array shifts the elements after it, so keys are
//! reported with the indices of the file as written.
//!
//! When every bad value could be removed, the result with defaults in their
//! place comes back too, so that the consistency checks that read only good
//! values can still run.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// One type problem: the dotted key (`issuers[1].audiences`) and the reason.
#[derive(Debug)]
pub(super) struct TypeProblem {
    /// The key, with the file's own array indices.
    pub key: String,
    /// serde's message.
    pub reason: String,
}

/// One step from the root of the table to a value, in the current table.
enum Step {
    Key(String),
    Index {
        current: usize,
        /// The array's dotted key, and the element's index in the file.
        array: String,
        original: usize,
    },
}

/// Deserialises `table` into `T` and lists every problem found on the way.
/// With problems, the value (if any) has defaults in place of the bad values.
pub(super) fn deserialize_all<T: DeserializeOwned>(
    mut table: toml::Table,
) -> (Option<T>, Vec<TypeProblem>) {
    let mut problems = Vec::new();
    // Keys removed so far, and the file indices removed from each array.
    let mut pruned = BTreeSet::new();
    let mut removed: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone()))
        {
            Ok(value) => return (Some(value), problems),
            Err(err) => err,
        };
        let (key, steps) = locate(err.path(), &removed);
        let reason = err.into_inner().message().to_owned();
        let (key, target) = match missing_field(&reason) {
            // Reported at the missing key; the enclosing table goes.
            Some(field) => (join(&key, field), steps),
            None => (key.clone(), steps),
        };
        let already = pruned.contains(&key);
        if !already {
            problems.push(TypeProblem {
                key: key.clone(),
                reason,
            });
        }
        let Some(target) = target.filter(|steps| !steps.is_empty()) else {
            // A missing top-level section: serde checks required fields after
            // every other field of the same table, so nothing is left unseen.
            return (None, problems);
        };
        if !remove(&mut table, &target) {
            return (None, problems);
        }
        pruned.insert(display(&target));
        if let Some(Step::Index {
            array, original, ..
        }) = target.last()
        {
            let indices = removed.entry(array.clone()).or_default();
            indices.push(*original);
            indices.sort_unstable();
        }
    }
}

/// The field a "missing field `x`" message names.
fn missing_field(reason: &str) -> Option<&str> {
    reason
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// The dotted key of an error path (file indices) and the steps to its value
/// in the current table (`None` when the path cannot be followed).
fn locate(
    path: &serde_path_to_error::Path,
    removed: &BTreeMap<String, Vec<usize>>,
) -> (String, Option<Vec<Step>>) {
    let mut steps = Some(Vec::new());
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key: name } => {
                key = join(&key, name);
                if let Some(steps) = steps.as_mut() {
                    steps.push(Step::Key(name.clone()));
                }
            }
            Segment::Seq { index } => {
                let original = original_index(removed.get(&key), *index);
                if let Some(steps) = steps.as_mut() {
                    steps.push(Step::Index {
                        current: *index,
                        array: key.clone(),
                        original,
                    });
                }
                key = format!("{key}[{original}]");
            }
            Segment::Enum { variant } => {
                key = join(&key, variant);
                steps = None;
            }
            Segment::Unknown => {
                key = join(&key, "?");
                steps = None;
            }
        }
    }
    (key, steps)
}

/// The index in the file of what is now element `current`, given the file
/// indices already removed from the array (sorted).
fn original_index(removed: Option<&Vec<usize>>, current: usize) -> usize {
    let mut index = current;
    for &gone in removed.into_iter().flatten() {
        if gone <= index {
            index += 1;
        }
    }
    index
}

fn display(steps: &[Step]) -> String {
    let mut key = String::new();
    for step in steps {
        match step {
            Step::Key(name) => key = join(&key, name),
            Step::Index { original, .. } => key = format!("{key}[{original}]"),
        }
    }
    key
}

/// Removes the value `steps` lead to; false when there is none.
fn remove(table: &mut toml::Table, steps: &[Step]) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let Some((first, rest)) = parents.split_first() else {
        return match last {
            Step::Key(name) => table.remove(name).is_some(),
            Step::Index { .. } => false,
        };
    };
    let Step::Key(name) = first else {
        return false;
    };
    let Some(mut value) = table.get_mut(name) else {
        return false;
    };
    for step in rest {
        let next = match (value, step) {
            (toml::Value::Table(inner), Step::Key(name)) => inner.get_mut(name),
            (toml::Value::Array(items), Step::Index { current, .. }) => items.get_mut(*current),
            _ => None,
        };
        let Some(next) = next else {
            return false;
        };
        value = next;
    }
    match (value, last) {
        (toml::Value::Table(inner), Step::Key(name)) => inner.remove(name).is_some(),
        (toml::Value::Array(items), Step::Index { current, .. }) if *current < items.len() => {
            items.remove(*current);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_indices_skip_removed_elements() {
        assert_eq!(original_index(None, 2), 2);
        assert_eq!(original_index(Some(&vec![0]), 0), 1);
        assert_eq!(original_index(Some(&vec![0, 1]), 0), 2);
        assert_eq!(original_index(Some(&vec![2]), 1), 1);
        assert_eq!(original_index(Some(&vec![2]), 2), 3);
        assert_eq!(original_index(Some(&vec![1, 3]), 2), 4);
    }
}
