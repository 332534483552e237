//! BuildKit-format AST dump.
