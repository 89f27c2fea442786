//! RequestAuthentication at run time (work in progress).
