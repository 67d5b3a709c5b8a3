//! [`IdempotencyKey`]: the key sent with every attempt of one event.

use std::cell::RefCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use rand::RngCore;

use super::EmitError;

/// Keys up to this length (a UUID is 36 bytes) are stored inline, without an allocation.
const INLINE: usize = 38;

/// The idempotency key of an accepted event: a random UUID v4 (lower-case, hyphenated) unless the
/// caller chose one with [`EmitOptions::idempotency_key`](super::EmitOptions::idempotency_key).
/// WorkOS stores one event per key within 24 hours, so every attempt of an event sends the same
/// key.
///
/// It reads as a `&str` (`Deref`, `AsRef<str>`, `Display`), compares with strings and converts
/// into a `String`. Keys of up to 38 bytes, generated ones included, are kept inline, so
/// accepting an event allocates nothing for its key.
#[derive(Clone)]
pub struct IdempotencyKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl IdempotencyKey {
    /// A new random key: a UUID v4 from the thread's cryptographically secure generator.
    pub(crate) fn generate() -> Self {
        let uuid = uuid::Builder::from_random_bytes(random_16()).into_uuid();
        let mut bytes = [0u8; INLINE];
        let len = uuid.hyphenated().encode_lower(&mut bytes).len();
        Self(Repr::Inline {
            len: len as u8,
            bytes,
        })
    }

    /// Checks `key` against WorkOS's rule for idempotency keys: 1 to 255 visible ASCII
    /// characters (no spaces, no control characters). The error says which part of the rule
    /// `key` breaks.
    ///
    /// The emitter applies it to [`EmitOptions::idempotency_key`](super::EmitOptions::idempotency_key);
    /// other stores of events (a database outbox) apply it before writing a caller's key.
    pub fn check(key: &str) -> Result<(), &'static str> {
        if key.is_empty() || key.len() > 255 {
            return Err("must be 1 to 255 characters");
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters");
        }
        Ok(())
    }

    /// The caller's key, checked with [`check`](Self::check).
    pub(crate) fn parse(key: String) -> Result<Self, EmitError> {
        Self::check(&key).map_err(EmitError::InvalidIdempotencyKey)?;
        Ok(Self::from_checked(key))
    }

    /// A key already known to be valid (read back from the spool).
    pub(crate) fn from_checked(key: String) -> Self {
        if key.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..key.len()].copy_from_slice(key.as_bytes());
            Self(Repr::Inline {
                len: key.len() as u8,
                bytes,
            })
        } else {
            Self(Repr::Heap(key.into_boxed_str()))
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled from a `&str` (ASCII for generated and checked keys) cut at its
            // own length, so this cannot fail; the fallback keeps it panic-free regardless.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

/// 16 bytes from the thread's secure generator, drawn 256 bytes at a time: the generator's
/// per-call overhead is paid once per 16 keys.
fn random_16() -> [u8; 16] {
    thread_local! {
        static POOL: RefCell<([u8; 256], usize)> = const { RefCell::new(([0; 256], 256)) };
    }
    POOL.with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            // Not reachable (nothing here re-enters), but a direct draw is as good.
            return rand::random();
        };
        let (buf, used) = &mut *pool;
        if *used == buf.len() {
            rand::rng().fill_bytes(buf);
            *used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&buf[*used..*used + 16]);
        // Used bytes are not kept around.
        buf[*used..*used + 16].fill(0);
        *used += 16;
        out
    })
}

impl Deref for IdempotencyKey {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for IdempotencyKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for IdempotencyKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IdempotencyKey {}

impl Hash for IdempotencyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for IdempotencyKey {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for IdempotencyKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for IdempotencyKey {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<IdempotencyKey> for String {
    fn eq(&self, other: &IdempotencyKey) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<IdempotencyKey> for &str {
    fn eq(&self, other: &IdempotencyKey) -> bool {
        *self == other.as_str()
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        match key.0 {
            Repr::Heap(s) => s.into(),
            Repr::Inline { .. } => key.as_str().to_owned(),
        }
    }
}

impl serde::Serialize for IdempotencyKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_keys_are_distinct_uuid_v4() {
        let keys: Vec<IdempotencyKey> = (0..1000).map(|_| IdempotencyKey::generate()).collect();
        let distinct: HashSet<&str> = keys.iter().map(|k| k.as_str()).collect();
        assert_eq!(distinct.len(), keys.len());
        for key in &keys {
            let uuid = uuid::Uuid::parse_str(key).expect("a UUID");
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(key.as_str(), uuid.hyphenated().to_string());
        }
    }

    #[test]
    fn callers_keys_are_checked_and_kept_whatever_their_length() {
        for key in [
            "k",
            "order-42-created",
            &"x".repeat(38),
            &"y".repeat(39),
            &"z".repeat(255),
        ] {
            let parsed = IdempotencyKey::parse(key.to_owned()).expect("valid");
            assert_eq!(parsed, key);
            assert_eq!(String::from(parsed.clone()), key);
            assert_eq!(parsed.len(), key.len());
        }
        for bad in [String::new(), "a b".into(), "é".into(), "x".repeat(256)] {
            assert!(IdempotencyKey::check(&bad).is_err(), "{bad:?}");
            assert!(matches!(
                IdempotencyKey::parse(bad),
                Err(EmitError::InvalidIdempotencyKey(_))
            ));
        }
    }
}
