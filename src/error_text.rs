//! An error and its causes as one line of text, for logs and for the operator.

use std::error::Error;

/// `error`'s message, then each of its causes after `: `, each said once: an error that names
/// its cause in its own message and also returns it as its source (as darklight's do) does not
/// repeat it.
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// An error that names its cause and returns it, as darklight's do.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:8080: {source}")]
    struct NamesItsCause {
        #[source]
        source: io::Error,
    }

    /// An error that only returns its cause.
    #[derive(Debug, thiserror::Error)]
    #[error("{context}")]
    struct Context {
        context: &'static str,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    }

    fn context(context: &'static str, source: impl Error + Send + Sync + 'static) -> Context {
        Context {
            context,
            source: Box::new(source),
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let cause = io::Error::new(io::ErrorKind::AddrInUse, "address in use");
        let error = context("cannot start", NamesItsCause { source: cause });
        assert_eq!(
            with_causes(&error),
            "cannot start: cannot listen on 127.0.0.1:8080: address in use"
        );
    }

    #[test]
    fn causes_not_named_above_are_kept() {
        let error = context(
            "classify",
            context("cannot write the report", io::Error::other("disk full")),
        );
        assert_eq!(
            with_causes(&error),
            "classify: cannot write the report: disk full"
        );
    }

    #[test]
    fn an_error_without_cause_is_its_message() {
        assert_eq!(with_causes(&io::Error::other("disk full")), "disk full");
    }
}
