//! [`error_chain`]: an error and its causes on one line.

use std::error::Error;

/// `e` and each of its sources, joined with `": "`.
///
/// A source whose text already appears in the line is left out: errors
/// often repeat their direct cause in their own message (a `thiserror`
/// `"...: {source}"`), and reqwest and hyper keep the interesting part
/// ("connection refused") in a source further down.
pub fn error_chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// A test error: its message, and its source.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for E {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn e(msg: &'static str, source: Option<E>) -> E {
        E(msg, source.map(Box::new))
    }

    #[test]
    fn joins_every_cause() {
        let err = e(
            "listing",
            Some(e("request failed", Some(e("refused", None)))),
        );
        assert_eq!(error_chain(&err), "listing: request failed: refused");
        assert_eq!(error_chain(&e("alone", None)), "alone");
    }

    #[test]
    fn leaves_out_a_cause_the_line_already_holds() {
        let err = e(
            "listing failed: request failed",
            Some(e("request failed", Some(e("refused", None)))),
        );
        assert_eq!(error_chain(&err), "listing failed: request failed: refused");
        let empty = e("timeout", Some(e("", None)));
        assert_eq!(error_chain(&empty), "timeout");
    }

    #[test]
    fn takes_a_static_trait_object_and_an_io_error() {
        let io = std::io::Error::other(e("inner", None));
        let dynamic: &(dyn Error + 'static) = &io;
        assert_eq!(error_chain(dynamic), "inner");
        let wrapped = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(error_chain(&wrapped), "gone");
    }
}
