//! The watched process trees: roots and their descendants. Stub.
