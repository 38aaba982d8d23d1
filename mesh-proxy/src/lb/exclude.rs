//! The endpoints a retry should avoid.

/// Indexes tried by earlier attempts of a request. Out-of-range indexes are ignored, and when
/// every endpoint is excluded the exclusion is dropped: a second try on a failed endpoint beats
/// failing the request without one.
#[derive(Clone, Copy)]
pub(super) struct Exclude<'a>(&'a [usize]);

impl<'a> Exclude<'a> {
    pub(super) fn new(tried: &'a [usize], endpoints: usize) -> Self {
        // Every endpoint can only be excluded when there are at least as many indexes.
        let all = tried.len() >= endpoints && (0..endpoints).all(|i| tried.contains(&i));
        Self(if all { &[] } else { tried })
    }

    pub(super) fn is_empty(self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn contains(self, i: usize) -> bool {
        self.0.contains(&i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_partial_exclusion() {
        let e = Exclude::new(&[0, 2], 3);
        assert!(e.contains(0) && e.contains(2) && !e.contains(1));
    }

    #[test]
    fn drops_an_exclusion_of_every_endpoint() {
        assert!(Exclude::new(&[1, 0, 1], 2).is_empty());
        assert!(!Exclude::new(&[1, 1, 5], 2).is_empty());
        assert!(Exclude::new(&[], 2).is_empty());
    }
}
