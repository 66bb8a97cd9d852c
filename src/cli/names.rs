//! Names for sandboxes that `tapnet run` creates without `--name`: adjective_noun, as Docker
//! names containers, unique among the sandboxes that exist.

const ADJECTIVES: &[&str] = &[
    "agile", "amber", "ample", "bold", "brave", "bright", "brisk", "calm", "clever", "cosmic",
    "crisp", "curious", "daring", "deft", "eager", "early", "epic", "fair", "fancy", "fast",
    "fearless", "fluent", "gentle", "glad", "golden", "happy", "hardy", "honest", "humble",
    "jolly", "keen", "kind", "lively", "loyal", "lucid", "merry", "mighty", "modest", "nimble",
    "noble", "patient", "plucky", "polite", "proud", "quick", "quiet", "rapid", "ready", "sharp",
    "shy", "silent", "sleek", "smart", "snappy", "solid", "steady", "stoic", "sunny", "swift",
    "tidy", "trusty", "vivid", "wise", "witty", "zealous",
];

const NOUNS: &[&str] = &[
    "albatross",
    "antelope",
    "badger",
    "beaver",
    "bison",
    "buffalo",
    "camel",
    "cheetah",
    "condor",
    "cougar",
    "coyote",
    "crane",
    "dingo",
    "dolphin",
    "eagle",
    "falcon",
    "ferret",
    "finch",
    "gazelle",
    "gecko",
    "gibbon",
    "heron",
    "hedgehog",
    "ibex",
    "impala",
    "jackal",
    "jaguar",
    "kestrel",
    "koala",
    "lemur",
    "leopard",
    "lynx",
    "magpie",
    "marmot",
    "meerkat",
    "mongoose",
    "narwhal",
    "ocelot",
    "osprey",
    "otter",
    "panda",
    "pelican",
    "penguin",
    "puffin",
    "quokka",
    "raven",
    "reindeer",
    "salmon",
    "seal",
    "sparrow",
    "stork",
    "swan",
    "tapir",
    "tiger",
    "toucan",
    "turtle",
    "walrus",
    "weasel",
    "wombat",
    "wren",
    "yak",
    "zebra",
];

/// Random picks before falling back to a numbered name: with thousands of pairs, a collision
/// streak this long means nearly every pair is taken.
const RANDOM_PICKS: usize = 16;

/// A random 64-bit number from the kernel's generator (0 if it fails: the caller then tries
/// the names in order).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    }
}

fn pick(random: u64) -> String {
    let adjective = ADJECTIVES[(random % ADJECTIVES.len() as u64) as usize];
    let noun = NOUNS[((random >> 32) % NOUNS.len() as u64) as usize];
    format!("{adjective}_{noun}")
}

/// An adjective_noun name not in `taken`; after [`RANDOM_PICKS`] collisions, the last pick
/// with the smallest free number appended (`swift_otter2`, as Docker does on a retry).
pub fn unique_name(taken: &[&str], mut random: impl FnMut() -> u64) -> String {
    let mut name = String::new();
    for _ in 0..RANDOM_PICKS {
        name = pick(random());
        if !taken.contains(&name.as_str()) {
            return name;
        }
    }
    (2..)
        .map(|n| format!("{name}{n}"))
        .find(|numbered| !taken.contains(&numbered.as_str()))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::model::validate_name;

    #[test]
    fn every_pair_is_a_valid_sandbox_name() {
        for adjective in ADJECTIVES {
            for noun in NOUNS {
                let name = format!("{adjective}_{noun}");
                assert!(validate_name("sandbox", &name).is_ok(), "{name}");
            }
        }
        assert!(ADJECTIVES.len() * NOUNS.len() > 3000);
    }

    #[test]
    fn words_are_lowercase_and_unique() {
        for words in [ADJECTIVES, NOUNS] {
            let mut sorted = words.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), words.len());
            assert!(
                words
                    .iter()
                    .all(|w| w.bytes().all(|b| b.is_ascii_lowercase()))
            );
        }
    }

    #[test]
    fn names_are_adjective_underscore_noun() {
        let mut rng = crate::test_rng::XorShift(1);
        for _ in 0..100 {
            let name = unique_name(&[], || rng.next());
            let (adjective, noun) = name.split_once('_').expect("underscore");
            assert!(
                ADJECTIVES.contains(&adjective) && NOUNS.contains(&noun),
                "{name}"
            );
        }
    }

    #[test]
    fn taken_names_are_skipped() {
        let taken_name = pick(0);
        let mut calls = 0u64;
        // First pick collides, the second does not.
        let name = unique_name(&[&taken_name], || {
            calls += 1;
            if calls == 1 { 0 } else { 1 }
        });
        assert_eq!(calls, 2);
        assert_eq!(name, pick(1));
        assert_ne!(name, taken_name);
    }

    #[test]
    fn a_numbered_name_when_random_picks_keep_colliding() {
        let always = pick(7);
        let second = format!("{always}2");
        let taken = [always.as_str(), second.as_str()];
        assert_eq!(unique_name(&taken, || 7), format!("{always}3"));
    }
}
