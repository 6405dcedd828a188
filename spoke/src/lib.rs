//! The spoke is built in a later step; this crate only reserves its place in the workspace.
