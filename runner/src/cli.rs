//! Command line, exactly as PROTOCOL.md section 1 specifies it.
