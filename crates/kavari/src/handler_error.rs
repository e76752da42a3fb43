//! [`HandlerError`]: a handler's failure, with its chain of causes and
//! whether retrying may help.

use std::fmt;

/// A handler's failure: an error (with its chain of causes) and whether the
/// delivery retry policy applies to it.
///
/// `?` converts anything a service's code usually fails with: every
/// `std::error::Error + Send + Sync + 'static`, `anyhow::Error` (its chain is
/// kept), `Box<dyn Error + Send + Sync>`, `String` and `&str`. Converted
/// errors are retriable; [`no_retry`](Self::no_retry) or
/// [`permanent`](Self::permanent) send the message to the dead-letter topic
/// at once.
///
/// ```
/// use kavari::HandlerError;
///
/// fn parse(s: &str) -> Result<u32, HandlerError> {
///     Ok(s.parse::<u32>()?) // ParseIntError converts
/// }
/// fn check(n: u32) -> Result<(), HandlerError> {
///     if n == 0 {
///         return Err(HandlerError::permanent("zero is not an order number"));
///     }
///     Ok(())
/// }
/// fn from_anything() -> Result<(), HandlerError> {
///     let boxed: Box<dyn std::error::Error + Send + Sync> = "lookup failed".into();
///     Err(boxed)?
/// }
/// assert!(parse("x").is_err_and(|e| e.is_retriable()));
/// assert!(check(0).is_err_and(|e| !e.is_retriable()));
/// assert_eq!(from_anything().unwrap_err().to_string(), "lookup failed");
/// ```
///
/// Like `anyhow::Error`, it is not itself a `std::error::Error` (the
/// conversion from every error could not exist if it were), but it derefs to
/// one: `err.source()`, `err.to_string()` and `&*err` work as on the error it
/// holds; [`into_std_error`](Self::into_std_error) makes it a concrete
/// `std::error::Error` ([`StdHandlerError`]) and
/// [`into_boxed`](Self::into_boxed) hands the error it holds over. Its
/// alternate form `{:#}` prints the whole chain, `outer: cause: root`, as
/// the dead-letter record's `original_error` header does.
pub struct HandlerError {
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
    retriable: bool,
}

impl HandlerError {
    /// A failure that may pass on retry.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            error: message.into().into(),
            retriable: true,
        }
    }

    /// A failure retrying cannot fix: the message goes to the dead-letter
    /// topic at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(message).no_retry()
    }

    /// Marks this error as not worth retrying.
    pub fn no_retry(mut self) -> Self {
        self.retriable = false;
        self
    }

    /// Whether the delivery retry policy applies.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The error this holds, for a caller that wants it back as a
    /// `std::error::Error` trait object.
    pub fn into_boxed(self) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self.error
    }

    /// This error as a [`StdHandlerError`]: a concrete `std::error::Error`
    /// value, for an API that takes `E: Error` (a `#[source]` field, a
    /// generic error parameter).
    pub fn into_std_error(self) -> StdHandlerError {
        StdHandlerError(self)
    }

    /// The error and its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
        let first: &(dyn std::error::Error + 'static) = &*self.error;
        std::iter::successors(Some(first), |e| e.source())
    }
}

/// A [`HandlerError`] as a `std::error::Error`
/// ([`HandlerError::into_std_error`]): shows the same message, with the same
/// causes behind `source()`, and keeps whether it is retriable.
#[derive(Debug)]
pub struct StdHandlerError(HandlerError);

impl StdHandlerError {
    /// Whether the delivery retry policy applied to the error.
    pub fn is_retriable(&self) -> bool {
        self.0.retriable
    }
}

impl fmt::Display for StdHandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StdHandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.error.source()
    }
}

impl<E> From<E> for HandlerError
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            retriable: true,
        }
    }
}

impl std::ops::Deref for HandlerError {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.error
    }
}

impl AsRef<dyn std::error::Error + Send + Sync + 'static> for HandlerError {
    fn as_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl fmt::Display for HandlerError {
    /// The error's own message; with `{:#}`, its causes too, joined by
    /// `": "` (a cause whose message its outer error already ends with is
    /// not repeated).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(&self.error, f);
        }
        let mut written = String::new();
        for e in self.chain() {
            let message = e.to_string();
            if written.ends_with(&message) {
                continue;
            }
            if !written.is_empty() {
                written.push_str(": ");
            }
            written.push_str(&message);
        }
        f.write_str(&written)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("error", &format_args!("{self:#}"))
            .field("retriable", &self.retriable)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the order")]
    struct Outer(#[source] std::io::Error);

    /// The chain is what an operator reads in the dead-letter header.
    #[test]
    fn converted_errors_keep_their_chain() {
        let io = std::io::Error::other("disk gone");
        let e = HandlerError::from(Outer(io));
        assert_eq!(e.to_string(), "reading the order");
        assert_eq!(format!("{e:#}"), "reading the order: disk gone");
        assert_eq!(e.chain().count(), 2);
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("disk gone")
        );
        assert!(e.is_retriable());
    }

    #[test]
    fn boxed_errors_and_strings_convert() {
        fn boxed() -> Result<(), HandlerError> {
            let b: Box<dyn std::error::Error + Send + Sync> =
                Box::new(Outer(std::io::Error::other("x")));
            Err(b)?
        }
        let e = boxed().unwrap_err();
        assert_eq!(format!("{e:#}"), "reading the order: x");
        let s: HandlerError = "plain".into();
        assert_eq!(format!("{s:#}"), "plain");
        let p = HandlerError::permanent("bad").into_boxed();
        assert_eq!(p.to_string(), "bad");
    }

    #[test]
    fn anyhow_errors_convert_with_their_chain() {
        fn handler() -> Result<(), HandlerError> {
            let r: anyhow::Result<()> = Err(anyhow::anyhow!("no such customer"))
                .map_err(|e| e.context("loading the order"));
            r?;
            Ok(())
        }
        let e = handler().unwrap_err();
        assert_eq!(format!("{e:#}"), "loading the order: no such customer");
        assert!(e.is_retriable());
    }

    /// Where a concrete `std::error::Error` is required.
    #[test]
    fn into_std_error_is_a_std_error_with_the_same_chain() {
        fn takes_an_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> String {
            let mut out = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                out.push_str(" <- ");
                out.push_str(&c.to_string());
                cause = c.source();
            }
            out
        }
        let e = HandlerError::from(Outer(std::io::Error::other("disk gone"))).no_retry();
        let failure = e.into_std_error();
        assert!(!failure.is_retriable());
        assert_eq!(takes_an_error(failure), "reading the order <- disk gone");
    }

    /// A cause that a thiserror `{0}` message already shows is not printed
    /// twice.
    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the order: {0}")]
        struct Shown(#[source] std::io::Error);
        let e = HandlerError::from(Shown(std::io::Error::other("disk gone")));
        assert_eq!(format!("{e:#}"), "reading the order: disk gone");
    }
}
