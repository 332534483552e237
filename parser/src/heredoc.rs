//! Heredoc detection.
