//! Key -> partition, the same way Kafka's default partitioner does it.
//!
//! A keyed message goes to `toPositive(murmur2(key)) % partitions`, where `murmur2` is
//! Kafka's variant of MurmurHash2 (seed `0x9747b28c`) and `toPositive(n) = n & 0x7fffffff`.
//! A Kafka producer and a Sluice producer therefore put the same key on the same partition
//! number, which keeps per-key ordering when a pipeline moves between the two. Keyless
//! messages are spread evenly by [`KeylessSpreader`].

use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's `Utils.murmur2`: MurmurHash2, 32 bits, seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    let length = data.len();
    // Kafka hashes the length as a Java int; keys longer than i32::MAX do not exist there.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition of a keyed message, as Kafka's default partitioner computes it.
/// `partitions` of zero is treated as one.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions.max(1)
}

/// Spreads keyless messages evenly over the partitions (round robin from a random start,
/// so many producers do not all begin on partition 0).
#[derive(Debug)]
pub struct KeylessSpreader {
    next: AtomicU32,
}

impl Default for KeylessSpreader {
    fn default() -> Self {
        Self {
            next: AtomicU32::new(rand::random::<u32>()),
        }
    }
}

impl KeylessSpreader {
    /// The partition for the next keyless message.
    pub fn next_partition(&self, partitions: u32) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) % partitions.max(1)
    }
}

/// Picks the partition of a message: by key if it has one, evenly otherwise.
pub fn choose_partition(key: Option<&[u8]>, partitions: u32, spreader: &KeylessSpreader) -> u32 {
    match key {
        Some(key) => partition_for_key(key, partitions),
        None => spreader.next_partition(partitions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partition_is_to_positive_modulo() {
        // toPositive(-973932308) = 1173551340; % 4 = 0, % 7 = 1173551340 % 7.
        assert_eq!(partition_for_key(b"21", 4), 1173551340 % 4);
        assert_eq!(partition_for_key(b"21", 7), 1173551340 % 7);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-1), i32::MAX as u32);
    }

    #[test]
    fn same_key_same_partition_and_keys_spread() {
        let mut counts = [0u32; 6];
        for i in 0..6000 {
            let key = format!("customer-{i}");
            let p = partition_for_key(key.as_bytes(), 6);
            assert_eq!(p, partition_for_key(key.as_bytes(), 6));
            counts[p as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven key spread {counts:?}");
        }
    }

    #[test]
    fn keyless_messages_spread_evenly() {
        let spreader = KeylessSpreader::default();
        let mut counts = [0u32; 5];
        for _ in 0..500 {
            counts[choose_partition(None, 5, &spreader) as usize] += 1;
        }
        assert_eq!(counts, [100; 5]);
    }
}
