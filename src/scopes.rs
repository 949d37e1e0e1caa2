//! [`Scopes`]: a set of OAuth scopes, the key of a token cache partition.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A set of OAuth scopes (RFC 6749 §3.3).
///
/// Kept in the order given (that is the order sent in `scope`), without duplicates; two sets
/// with the same scopes in another order are equal, so they share one cached token.
///
/// Anything that names scopes converts into it (`"a b"`, `["a", "b"]`, a `Vec<String>`), which
/// is what [`ClientCredentialsBuilder::scopes`](crate::ClientCredentialsBuilder::scopes) and
/// [`RequestOptions::scopes`](crate::RequestOptions::scopes) take.
///
/// ```
/// use client_credentials::Scopes;
///
/// let a = Scopes::new(["accounts.read", "accounts.write"]);
/// let b: Scopes = "accounts.write accounts.read".parse().unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a, Scopes::from("accounts.write  accounts.read"));
/// assert_eq!(a.to_string(), "accounts.read accounts.write");
/// ```
#[derive(Clone, Default)]
pub struct Scopes {
    list: Arc<[Box<str>]>,
    key: Arc<str>,
}

impl Scopes {
    /// A scope set from scope strings. Empty strings are dropped; scopes containing a space
    /// are split. Use [`Scopes::try_new`] to reject invalid characters.
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Box<str>> = Vec::new();
        for scope in scopes {
            for part in scope.as_ref().split(' ').filter(|s| !s.is_empty()) {
                if !list.iter().any(|s| &**s == part) {
                    list.push(part.into());
                }
            }
        }
        let mut sorted: Vec<&str> = list.iter().map(|s| &**s).collect();
        sorted.sort_unstable();
        let key: Arc<str> = Arc::from(sorted.join(" "));
        Self {
            list: list.into(),
            key,
        }
    }

    /// Like [`Scopes::new`], but fails on a character RFC 6749 §3.3 does not allow in a scope
    /// (`%x21 / %x23-5B / %x5D-7E`: printable ASCII except `"` and `\`).
    pub fn try_new<I, S>(scopes: I) -> Result<Self, crate::ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let scopes = Self::new(scopes);
        scopes.check()?;
        Ok(scopes)
    }

    /// Fails on the first scope with a character RFC 6749 §3.3 does not allow.
    /// The scopes sorted and space-separated: equal for equal sets, whatever their order.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub(crate) fn canonical(&self) -> &str {
        &self.key
    }

    pub(crate) fn check(&self) -> Result<(), crate::ConfigError> {
        match self.iter().find(|s| {
            !s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        }) {
            Some(bad) => Err(crate::ConfigError::InvalidScope(
                crate::text::shown(bad).to_string(),
            )),
            None => Ok(()),
        }
    }

    /// Whether there are no scopes (the `scope` parameter is then not sent).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The scopes in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.list.iter().map(|s| &**s)
    }
}

impl fmt::Display for Scopes {
    /// The space-separated list, as sent in the `scope` parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Scopes {}

impl Hash for Scopes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl std::str::FromStr for Scopes {
    type Err = crate::ConfigError;

    /// Parses a space-separated scope list, rejecting invalid characters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_new(s.split(' '))
    }
}

impl<S: AsRef<str>> FromIterator<S> for Scopes {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::new(iter)
    }
}

impl From<&str> for Scopes {
    /// A space-separated list, unchecked (see [`Scopes::new`]).
    fn from(list: &str) -> Self {
        Self::new([list])
    }
}

impl From<String> for Scopes {
    /// A space-separated list, unchecked (see [`Scopes::new`]).
    fn from(list: String) -> Self {
        Self::new([list])
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Scopes {
    fn from(list: [S; N]) -> Self {
        Self::new(list)
    }
}

impl<S: AsRef<str>> From<Vec<S>> for Scopes {
    fn from(list: Vec<S>) -> Self {
        Self::new(list)
    }
}

impl From<&Scopes> for Scopes {
    fn from(scopes: &Scopes) -> Self {
        scopes.clone()
    }
}
