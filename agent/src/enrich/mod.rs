//! Metadata about observed processes, attached to spans as resource attributes.

pub mod process;
