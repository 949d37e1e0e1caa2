//! The cache per scope set: the configured scopes' cache, and a bounded list of caches for the
//! scope sets requests ask for, read without a lock.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use super::{Shared, TokenCache};
use crate::Scopes;

/// Every cache of one `ClientCredentials`.
pub(crate) struct Partitions {
    /// The configured scopes' cache.
    pub(crate) default: Arc<TokenCache>,
    /// Other scope sets: a copy-on-write list, so a lookup takes no lock.
    scoped: ArcSwap<Vec<Arc<TokenCache>>>,
    insert: Mutex<()>,
    max: usize,
}

impl Partitions {
    pub(crate) fn new(scopes: Scopes, shared: Arc<Shared>, max_scope_sets: usize) -> Self {
        Self {
            default: Arc::new(TokenCache::new(scopes, shared)),
            scoped: ArcSwap::from_pointee(Vec::new()),
            insert: Mutex::new(()),
            max: max_scope_sets,
        }
    }

    /// The cache for `scopes` (`None`: the configured ones).
    pub(crate) fn get(&self, scopes: Option<&Scopes>) -> Arc<TokenCache> {
        match scopes.and_then(|s| self.other(s)) {
            Some(cache) => cache,
            None => Arc::clone(&self.default),
        }
    }

    /// The cache of a scope set other than the configured one; `None` for the configured one.
    pub(crate) fn other(&self, scopes: &Scopes) -> Option<Arc<TokenCache>> {
        (*scopes != self.default.scopes).then(|| self.scoped(scopes))
    }

    /// Every cache: the configured scopes' and the others'.
    #[cfg(feature = "jwt")]
    pub(crate) fn all(&self) -> Vec<Arc<TokenCache>> {
        let mut all = vec![Arc::clone(&self.default)];
        all.extend(self.scoped.load().iter().cloned());
        all
    }

    fn scoped(&self, scopes: &Scopes) -> Arc<TokenCache> {
        if let Some(found) = self.scoped.load().iter().find(|c| c.scopes == *scopes) {
            return Arc::clone(found);
        }
        let _guard = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.scoped.load_full();
        if let Some(found) = current.iter().find(|c| c.scopes == *scopes) {
            return Arc::clone(found);
        }
        let cache = Arc::new(TokenCache::new(
            scopes.clone(),
            Arc::clone(&self.default.shared),
        ));
        if self.max == 0 {
            // No room: a cache used for this request only.
            return cache;
        }
        let mut next: Vec<Arc<TokenCache>> = current.iter().cloned().collect();
        while next.len() >= self.max {
            let evicted = next.remove(0);
            tracing::debug!(
                scopes = %evicted.scopes,
                "scope-set cache bound reached; dropping the oldest"
            );
        }
        next.push(Arc::clone(&cache));
        self.scoped.store(Arc::new(next));
        cache
    }

    /// How many scope sets besides the configured one have a cache.
    #[cfg(test)]
    fn scoped_len(&self) -> usize {
        self.scoped.load().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{cache_with, Counting};
    use super::*;

    fn partitions(max: usize) -> Partitions {
        let (cache, _) = cache_with(Counting::new(Duration::from_secs(60)));
        Partitions::new(Scopes::from("a"), Arc::clone(&cache.shared), max)
    }

    #[test]
    fn the_configured_scopes_share_the_default_cache() {
        let p = partitions(4);
        assert!(Arc::ptr_eq(&p.get(None), &p.default));
        assert!(Arc::ptr_eq(&p.get(Some(&Scopes::from("a"))), &p.default));
        let b = p.get(Some(&Scopes::from("b c")));
        assert!(!Arc::ptr_eq(&b, &p.default));
        assert!(
            Arc::ptr_eq(&p.get(Some(&Scopes::from("c b"))), &b),
            "same set, any order"
        );
    }

    #[test]
    fn scope_sets_are_bounded_oldest_first() {
        let p = partitions(2);
        let first = p.get(Some(&Scopes::from("x")));
        let _second = p.get(Some(&Scopes::from("y")));
        let _third = p.get(Some(&Scopes::from("z")));
        assert_eq!(p.scoped_len(), 2);
        let again = p.get(Some(&Scopes::from("x")));
        assert!(
            !Arc::ptr_eq(&first, &again),
            "the oldest was dropped and made anew"
        );
        let none = partitions(0);
        let once = none.get(Some(&Scopes::from("x")));
        assert_eq!(none.scoped_len(), 0);
        assert!(!Arc::ptr_eq(&once, &none.get(Some(&Scopes::from("x")))));
    }
}
